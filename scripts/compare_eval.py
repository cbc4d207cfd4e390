#!/usr/bin/env python3
"""Side-by-side loss-only evaluation speed: this crate vs PyTorch + transformers, same weights, one run.

Builds a randomly initialised GPT-2 124M with transformers, saves it to a temporary directory,
and for each shape [B, T] times, alternately,
  * PyTorch: `F.cross_entropy(model(x).logits.view(-1, V), y.view(-1))` under no_grad
    (x = rows[:, :-1], y = rows[:, 1:]; the same B·T next-token predictions), and
  * the crate: `cargo run --release --example eval_speed -- --model DIR --batch B --seq T --json`
    (`Evaluator::evaluate` on the same rows),
then prints medians (scored tokens/s), the ratio, and checks that both losses agree.

    python3 scripts/compare_eval.py [--threads 2] [--iters 3] [--json]
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
import torch.nn.functional as F
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

from bench_common import cpu_model

SHAPES = [(4, 256), (1, 1024)]


def rows_of(b, t, v=50257):
    # the same rows as examples/eval_speed.rs: (i * 7919 + j * 104729) % V, j in 0..=T
    return torch.tensor([[(i * 7919 + j * 104729) % v for j in range(t + 1)] for i in range(b)], dtype=torch.long)


def torch_eval(model, b, t, iters):
    rows = rows_of(b, t)
    x, y = rows[:, :-1], rows[:, 1:]
    with torch.no_grad():
        def once():
            logits = model(input_ids=x, use_cache=False).logits
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item()
        loss = once()  # warm-up
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            loss = once()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), loss


def rust_eval(model_dir, b, t, iters, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        ["cargo", "run", "--release", "-q", "--example", "eval_speed", "--",
         "--model", model_dir, "--batch", str(b), "--seq", str(t), "--iters", str(iters), "--json"],
        capture_output=True, text=True, env=env, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["median_seconds"], r["loss"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    subprocess.run(["cargo", "build", "--release", "-q", "--example", "eval_speed"], check=True)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        for (b, t) in SHAPES:
            pt, pt_loss = torch_eval(model, b, t, a.iters)
            rs, rs_loss = rust_eval(d, b, t, a.iters, a.threads)
            assert abs(pt_loss - rs_loss) < 1e-4 * abs(pt_loss), (pt_loss, rs_loss)
            rows.append({"batch": b, "seq": t, "torch_tok_s": b * t / pt, "crate_tok_s": b * t / rs,
                         "ratio": pt / rs, "torch_loss": pt_loss, "crate_loss": rs_loss})
    info = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "threads": a.threads,
            "torch": torch.__version__, "transformers": transformers.__version__, "rows": rows}
    if a.json:
        print(json.dumps(info, indent=1))
        return
    print(f"# loss-only eval f32, GPT-2 124M random weights, {a.threads} threads, median of {a.iters}")
    print(f"# {info['date']} · {info['cpu']} · torch {info['torch']} · transformers {info['transformers']}")
    print("| B×T | PyTorch tok/s | gpt2 tok/s | ratio (gpt2 / PyTorch) | loss PyTorch / gpt2 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']}×{r['seq']} | {r['torch_tok_s']:.0f} | {r['crate_tok_s']:.0f} | {r['ratio']:.2f}× "
              f"| {r['torch_loss']:.5f} / {r['crate_loss']:.5f} |")


if __name__ == "__main__":
    sys.exit(main())
