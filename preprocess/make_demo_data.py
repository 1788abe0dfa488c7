"""Generate the demo world (preprocess/demo_world/): a small synthetic world of coloured shapes as the
TSVs of every task: captions, refcoco and refseg regions, VQA, SNLI-VE, entities, the multi-image tasks
from pairs of its images, video and audio clips, and IE samples over every modality mix."""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from preprocess.demo_world.world import write_world  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="dataset/demo", help="output folder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--valid-images", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128, help="side of the square images")
    parser.add_argument("--train-videos", type=int, default=400, help="clips of the video world (0: none)")
    parser.add_argument("--valid-videos", type=int, default=50)
    parser.add_argument("--train-audio", type=int, default=400, help="clips of the audio world (0: none)")
    parser.add_argument("--valid-audio", type=int, default=50)
    parser.add_argument("--video-size", type=int, default=64, help="side of the square video frames")
    parser.add_argument("--video-fps", type=int, default=8, help="frames per second of the videos")
    parser.add_argument("--train-ie", type=int, default=500,
                        help="samples per IE subtask (ner, re, ee) over every modality mix (0: none)")
    parser.add_argument("--valid-ie", type=int, default=60)
    args = parser.parse_args(argv)
    if args.image_size < 16:
        parser.error("--image-size must be at least 16")
    if args.video_size < 16 or args.video_size % 2:
        parser.error("--video-size must be even (H.264 4:2:0) and at least 16")
    if args.video_fps < 1:
        parser.error("--video-fps must be at least 1")
    for flag in ("train_videos", "valid_videos", "train_audio", "valid_audio", "train_ie", "valid_ie"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must not be negative")
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    counts = write_world(args.out, args.seed, (args.train_images, args.valid_images), args.image_size,
                         (args.train_videos, args.valid_videos), (args.train_audio, args.valid_audio),
                         args.video_size, args.video_fps, (args.train_ie, args.valid_ie))
    summary = ", ".join(f"{name} {rows}" for name, rows in counts.items())
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f}s (rows): {summary}")


if __name__ == "__main__":
    main()
