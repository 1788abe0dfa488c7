"""What ``--layer-positions`` costs a training step: unify_tiny's forward and backward on a batch of each
demo task, positions off and on, in process CPU seconds (one torch thread; what a shared machine
disturbs least), as the quickstart trains (64-pixel images, 8 frames of 32 pixels, 100 bins).

    .venv/bin/python benchmarks/layer_positions.py [--demo-dir dataset/demo] [--batch 32] [--repeats 4]

The demo world and its vocabulary come from run_scripts/quickstart.sh (or preprocess/make_demo_data.py
and preprocess/build_vocab.py). Image and text batches share their positions across samples, so each
layer projects them once; video and audio ones differ by sample (frame and clip times).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import best_times, build_model, build_task, machine_line, print_table  # noqa: E402

TASK_FILES = {"caption": "caption", "refcoco": "refcoco", "refseg": "refseg", "temporal_grounding": "temporal",
              "video_caption": "video_caption", "audio_caption": "audio_caption"}


def step_seconds(task, batch, layer_positions, repeats):
    torch.manual_seed(0)
    model = build_model(task, "unify_tiny", layer_positions=layer_positions, dropout=0.0).train()

    def step():
        logits, _ = model(**batch["net_input"])
        logits.logsumexp(-1).sum().backward()

    return best_times(step, repeats)[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo-dir", default="dataset/demo")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(machine_line())
    rows = []
    for name, file in TASK_FILES.items():
        data = f"{args.demo_dir}/{file}_train.tsv,{args.demo_dir}/{file}_valid.tsv"
        task = build_task(name, data, f"{args.demo_dir}/vocab", patch_image_size=64, num_bins=100, num_frames=8,
                          video_frame_size=32)
        task.load_dataset("valid")
        dataset = task.dataset("valid")
        batch = dataset.collater([dataset[i] for i in range(min(args.batch, len(dataset)))])
        off, on = (step_seconds(task, batch, flag, args.repeats) for flag in (False, True))
        rows.append([name, off, on, f"{on / off:.2f}"])
    print_table(["task", "off cpu s", "on cpu s", "on / off"], rows)


if __name__ == "__main__":
    main()
