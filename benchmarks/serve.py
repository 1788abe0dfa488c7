"""Serving speed: N concurrent requests to serve.py (throughput, p50/p99 latency), and predict.py on a folder.

    .venv/bin/python benchmarks/serve.py --path checkpoint.pt [--task refcoco] [--text "the dog"] \\
        [--requests 64] [--concurrency 1,8,32] [--url http://127.0.0.1:8000]

The inputs are the COCO-mini photos (``../shared/data/coco-mini/images``), each sent as a multipart
upload with ``--text`` (no drawing). Without ``--url`` the script starts ``serve.py --path`` on a free
port (``--serve-flags`` are passed on) and stops it afterwards. For each concurrency, ``--requests``
requests are sent with that many in flight; latency is each request's time from sending to its whole
answer. Every process runs ``--threads`` torch threads. Then ``predict.py --inputs`` runs on a folder of the same photos, once in a fresh process (the
whole command, model loading included) and once in this one on a loaded predictor (inputs/s).
"""
import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from common import ROOT, SHARED_DATA, machine_line, print_table
from utils.logs import set_up_logging

PHOTOS = os.path.join(SHARED_DATA, "coco-mini", "images")


def threads_env(args):
    """The environment of the started processes: torch's CPU threads set to --threads."""
    return dict(os.environ, OMP_NUM_THREADS=str(args.threads))


def start_server(args):
    """(process, URL) of serve.py on the checkpoint, once it listens."""
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "serve.py"), "--path", args.path, "--port", "0",
                                *(["--task", args.task] if args.task else []), *args.serve_flags.split()],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=threads_env(args))
    for line in process.stdout:
        if line.startswith("serving on "):
            return process, line.split()[-1].rstrip("/")
    raise SystemExit(f"serve.py ended with {process.wait()} before serving")


async def send_all(url, photos, args, concurrency):
    """(latencies in seconds, wall seconds, error count) of ``args.requests`` requests, ``concurrency`` at once."""
    import aiohttp

    gate, latencies, errors = asyncio.Semaphore(concurrency), [], 0

    async def one(session, k):
        nonlocal errors
        data = aiohttp.FormData()
        data.add_field("text", args.text)
        if args.task:
            data.add_field("task", args.task)
        data.add_field("image", photos[k % len(photos)], filename="photo.jpg")
        async with gate:
            start = time.perf_counter()
            async with session.post(f"{url}/api/predict", data=data) as response:
                await response.read()
                errors += response.status != 200
            latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await one(session, 0)  # warm-up
        latencies.clear()
        start = time.perf_counter()
        await asyncio.gather(*(one(session, k) for k in range(args.requests)))
        return latencies, time.perf_counter() - start, errors


def server_rows(url, photos, args):
    rows = []
    for concurrency in map(int, args.concurrency.split(",")):
        latencies, wall, errors = asyncio.run(send_all(url, photos, args, concurrency))
        milliseconds = np.array(latencies) * 1000
        rows.append([f"server, {concurrency} at once", args.requests, wall, args.requests / wall,
                     float(np.percentile(milliseconds, 50)), float(np.percentile(milliseconds, 99)), errors])
    return rows


def folder_rows(args):
    """predict.py on a folder of the photos: the whole command, and a loaded predictor."""
    from predict import Input, Predictor

    rows = []
    with tempfile.TemporaryDirectory(prefix="uniground-bench-") as scratch:
        folder = os.path.join(scratch, "photos")
        shutil.copytree(PHOTOS, folder)
        command = [sys.executable, os.path.join(ROOT, "predict.py"), "--path", args.path, "--inputs", folder,
                   "--text", args.text, "--output", os.path.join(scratch, "results.jsonl"),
                   *(["--task", args.task] if args.task else []), *args.predict_flags.split()]
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env=threads_env(args))
        wall = time.perf_counter() - start
        count = len(os.listdir(folder))
        rows.append(["predict.py --inputs (process)", count, wall, count / wall, "", "", 0])
        predictor = Predictor.from_checkpoint(args.path, task=args.task, device="cpu" if "--cpu" in
                                              args.predict_flags.split() else None)
        inputs = [Input(args.text, image=os.path.join(folder, name)) for name in sorted(os.listdir(folder))]
        predictor.predict(inputs[:1])  # warm-up
        start = time.perf_counter()
        predictor.predict(inputs)
        wall = time.perf_counter() - start
        rows.append([f"Predictor.predict, batch {predictor.batch_size}", count, wall, count / wall, "", "", 0])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", required=True, help="checkpoint (serve.py's and predict.py's --path)")
    parser.add_argument("--url", help="a running server (default: start serve.py --path on a free port)")
    parser.add_argument("--task", help="the task to ask for (default: the checkpoint's)")
    parser.add_argument("--text", default="the object in the middle", help="the text sent with each photo")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", default="1,8,32", help="requests in flight at once, comma-separated")
    parser.add_argument("--serve-flags", default="--cpu", help="options for the started serve.py")
    parser.add_argument("--predict-flags", default="--cpu", help="options for predict.py")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads of every process (1: steady figures on a shared machine, where "
                             "several threads wait for each other)")
    args = parser.parse_args(argv)
    set_up_logging()
    torch.set_num_threads(args.threads)
    photos = [open(os.path.join(PHOTOS, name), "rb").read() for name in sorted(os.listdir(PHOTOS))]
    print(machine_line())
    print(f"{len(photos)} COCO-mini photos, text {args.text!r}, checkpoint {args.path}")
    process, url = start_server(args) if args.url is None else (None, args.url)
    try:
        rows = server_rows(url, photos, args)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    rows += folder_rows(args)
    print_table(["what", "inputs", "seconds", "inputs/s", "p50 ms", "p99 ms", "errors"], rows)


if __name__ == "__main__":
    main()
