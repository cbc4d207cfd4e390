#!/usr/bin/env python3
"""Side-by-side training-step speed: this crate vs PyTorch + transformers, one run.

One training step = forward + cross-entropy + backward + clip_grad_norm_(1.0) + AdamW
(weight decay on >= 2-D tensors), f32, N threads, random init, on the same shapes:

  124M  B=4  T=64   (the llm.c / reference-numbers shape)
  4 layers, 4 heads, 128 dims, vocab 50257, B=8 T=128   (the bundled Shakespeare model's shape)

PyTorch: GPT2LMHeadModel (default attention implementation), torch.optim.AdamW(foreach=False).
Crate: the `train` example (`--json --no-save`, RAYON_NUM_THREADS=N) on the Shakespeare val text.
Both report the median over --steps steps after one warm-up step (first-touch allocations,
optimizer state) that is not counted.

Usage (repo root):  python3 scripts/compare_train.py [--threads 2] [--steps 6] [--json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

from bench_common import cpu_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "fixtures", "corpus", "shakespeare_val.txt")

SHAPES = [
    # name, n_layer, n_head, n_embd, n_positions, B, T
    ("124m", 12, 12, 768, 1024, 4, 64),
    ("4L-128d", 4, 4, 128, 128, 8, 128),
]


def torch_step_seconds(n_layer, n_head, n_embd, n_pos, b, t, steps):
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_pos,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), foreach=False)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 50257, (b, t), generator=g)
    y = torch.randint(0, 50257, (b, t), generator=g)

    def one():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=x, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    one()  # warm-up (allocations, optimizer state)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        one()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def crate_step_seconds(n_layer, n_head, n_embd, n_pos, b, t, steps, threads, out_dir):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = ["cargo", "run", "--release", "-q", "--example", "train", "--",
           "--data", DATA, "--init", "nano", "--n-layer", str(n_layer), "--n-head", str(n_head),
           "--n-embd", str(n_embd), "--n-positions", str(n_pos), "--batch-size", str(b),
           "--seq-len", str(t), "--steps", str(steps + 1), "--lr", "1e-4", "--min-lr", "1e-4",
           "--json", "--no-save", "--out", out_dir]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    ms = [l["ms"] for l in lines if l.get("event") == "step"][1:]  # drop the warm-up step
    return statistics.median(ms) / 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    subprocess.run(["cargo", "build", "--release", "-q", "--example", "train"], check=True, cwd=ROOT)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, nl, nh, ne, npos, b, t in SHAPES:
            pt = torch_step_seconds(nl, nh, ne, npos, b, t, a.steps)
            rs = crate_step_seconds(nl, nh, ne, npos, b, t, a.steps, a.threads, d)
            rows.append({"shape": name, "batch": b, "seq": t, "torch_s": pt, "crate_s": rs,
                         "torch_tok_s": b * t / pt, "crate_tok_s": b * t / rs, "ratio": pt / rs})
    info = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "threads": a.threads,
            "torch": torch.__version__, "transformers": transformers.__version__, "rows": rows}
    if a.json:
        print(json.dumps(info, indent=1))
        return
    print(f"# training step f32 (fwd + bwd + clip + AdamW), random init, {a.threads} threads, "
          f"median of {a.steps}")
    print(f"# {info['date']} · {info['cpu']} · torch {info['torch']} · transformers {info['transformers']}")
    print("| shape | B×T | PyTorch s/step | gpt2 s/step | PyTorch tok/s | gpt2 tok/s | speed ratio (PyTorch time / gpt2 time) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['batch']}×{r['seq']} | {r['torch_s']:.3f} | {r['crate_s']:.3f} | "
              f"{r['torch_tok_s']:.0f} | {r['crate_tok_s']:.0f} | {r['ratio']:.2f}× |")


if __name__ == "__main__":
    sys.exit(main())
