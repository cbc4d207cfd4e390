#!/usr/bin/env python3
"""Side-by-side forward-pass speed: this crate vs PyTorch + transformers, same model, one run.

Builds a randomly initialised GPT-2 124M with transformers, saves it, times
`GPT2LMHeadModel(input_ids).logits` (torch, N threads, no_grad) and the crate's
`forward_speed` example on the same checkpoint, alternating shapes, and prints
medians and the ratio. Usage (repo root):

    python3 scripts/compare_forward.py [--threads 2] [--iters 5] [--json]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

SHAPES = [(4, 256), (1, 1024), (8, 128)]


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def torch_forward(model, b, t, iters):
    ids = (torch.arange(b * t).reshape(b, t) * 104729 % 50257).long()
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)  # warm-up
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            model(input_ids=ids, use_cache=False).logits
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rust_forward(model_dir, b, t, iters, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        ["cargo", "run", "--release", "-q", "--example", "forward_speed", "--",
         "--model", model_dir, "--batch", str(b), "--seq", str(t), "--iters", str(iters), "--json"],
        capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_seconds"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    subprocess.run(["cargo", "build", "--release", "-q", "--example", "forward_speed"], check=True)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        for (b, t) in SHAPES:
            pt = torch_forward(model, b, t, a.iters)
            rs = rust_forward(d, b, t, a.iters, a.threads)
            rows.append({"batch": b, "seq": t, "torch_tok_s": b * t / pt, "crate_tok_s": b * t / rs,
                         "ratio": pt / rs})
    info = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "threads": a.threads,
            "torch": torch.__version__, "transformers": transformers.__version__, "rows": rows}
    if a.json:
        print(json.dumps(info, indent=1))
        return
    print(f"# forward f32, GPT-2 124M random weights, {a.threads} threads, median of {a.iters}")
    print(f"# {info['date']} · {info['cpu']} · torch {info['torch']} · transformers {info['transformers']}")
    print("| B×T | PyTorch tok/s | gpt2 tok/s | ratio |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']}×{r['seq']} | {r['torch_tok_s']:.0f} | {r['crate_tok_s']:.0f} | {r['ratio']:.2f}× |")


if __name__ == "__main__":
    sys.exit(main())
