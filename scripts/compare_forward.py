#!/usr/bin/env python3
"""Side-by-side forward-pass and decode speed: this crate vs PyTorch + transformers, same model, one run.

Builds a randomly initialised GPT-2 124M with transformers, saves it, and times, alternately:
  * forward (logits for every position), f32: `GPT2LMHeadModel(input_ids).logits` (torch, N
    threads, no_grad) vs the crate's `forward_speed` example on the same checkpoint, at
    B×T = 4×256, 1×1024, 8×128; and bf16 weights (torch: `model.to(bfloat16)`; crate:
    `--dtype bf16`) at 4×256;
  * decode: transformers `generate` (greedy, KV cache, batch 1, 16-token prompt, 128 new tokens)
    in f32 vs the crate's `decode_speed` example (the same greedy `generate`) with f32, f16,
    bf16 and int8 weights — new tokens/s including the prompt, as both report it;
  * the machine's memory bandwidth (torch: sum of a 1 GiB f32 tensor, N threads) and the crate's
    achieved weight-read bandwidth per decode step as a fraction of it.
It prints medians and ratios (crate / PyTorch). Usage (repo root):

    python3 scripts/compare_forward.py [--threads 2] [--iters 5] [--json] [--skip-decode]
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
SHAPES = [(4, 256), (1, 1024), (8, 128)]
BF16_SHAPES = [(4, 256)]
PROMPT, NEW = 16, 128


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


def torch_generate(model, runs):
    ids = torch.tensor([[(i * 7919 + 13) % 50257 for i in range(PROMPT)]])
    kw = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, use_cache=True,
              pad_token_id=50256, attention_mask=torch.ones_like(ids))
    with torch.no_grad():
        model.generate(ids, **kw)  # warm-up
        rates = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = model.generate(ids, **kw)
            el = time.perf_counter() - t0
            assert out.shape[1] == PROMPT + NEW
            rates.append(NEW / el)
    return statistics.median(rates)


def memory_bandwidth(threads):
    x = torch.ones(256 * 1024 * 1024, dtype=torch.float32)  # 1 GiB
    x.sum()
    best = []
    for _ in range(3):
        t0 = time.perf_counter()
        x.sum()
        best.append(x.numel() * 4 / (time.perf_counter() - t0) / 1e9)
    del x
    return statistics.median(best)


def run_example(name, args, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(["cargo", "run", "--release", "-q", "--example", name, "--"] + args + ["--json"],
                         capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3, help="generate runs per setting")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for ex in ("forward_speed", "decode_speed"):
        subprocess.run(["cargo", "build", "--release", "-q", "--example", ex], check=True, cwd=ROOT)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    fwd, dec = [], []
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        for (b, t) in SHAPES:
            pt = torch_forward(model, b, t, a.iters)
            rs = run_example("forward_speed", ["--model", d, "--batch", str(b), "--seq", str(t),
                                               "--iters", str(a.iters)], a.threads)["median_seconds"]
            fwd.append({"dtype": "f32", "batch": b, "seq": t, "torch_tok_s": b * t / pt,
                        "crate_tok_s": b * t / rs, "ratio": pt / rs})
        model_bf16 = GPT2LMHeadModel(GPT2Config()).eval()
        model_bf16.load_state_dict(model.state_dict())
        model_bf16 = model_bf16.to(torch.bfloat16)
        for (b, t) in BF16_SHAPES:
            pt = torch_forward(model_bf16, b, t, a.iters)
            rs = run_example("forward_speed", ["--model", d, "--batch", str(b), "--seq", str(t), "--dtype", "bf16",
                                               "--iters", str(a.iters)], a.threads)["median_seconds"]
            fwd.append({"dtype": "bf16", "batch": b, "seq": t, "torch_tok_s": b * t / pt,
                        "crate_tok_s": b * t / rs, "ratio": pt / rs})
        del model_bf16
        bw = None
        if not a.skip_decode:
            torch_rate = torch_generate(model, a.runs)
            bw = memory_bandwidth(a.threads)
            for dt in ("f32", "f16", "bf16", "int8"):
                r = run_example("decode_speed", ["--model", d, "--dtype", dt, "--prompt-tokens", str(PROMPT),
                                                 "--new-tokens", str(NEW), "--runs", str(a.runs)], a.threads)
                dec.append({"dtype": dt, "torch_f32_tok_s": torch_rate, "crate_tok_s": r["tokens_per_second"],
                            "ratio": r["tokens_per_second"] / torch_rate, "decode_ms_per_step": r["decode_ms_per_step"],
                            "weight_gb_per_s": r["weight_gb_per_s"],
                            "fraction_of_bandwidth": r["weight_gb_per_s"] / bw if bw else None})
    info = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "threads": a.threads,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "memory_gb_per_s": bw, "forward": fwd, "decode": dec}
    if a.json:
        print(json.dumps(info, indent=1))
        return
    print(f"# GPT-2 124M random weights, {a.threads} threads; {info['date']} · {info['cpu']} · "
          f"torch {info['torch']} · transformers {info['transformers']}")
    print(f"## forward (logits for all positions), median of {a.iters}")
    print("| weights | B×T | PyTorch tok/s | gpt2 tok/s | ratio |")
    print("|---|---|---|---|---|")
    for r in fwd:
        print(f"| {r['dtype']} | {r['batch']}×{r['seq']} | {r['torch_tok_s']:.0f} | {r['crate_tok_s']:.0f} "
              f"| {r['ratio']:.2f}× |")
    if dec:
        print(f"## greedy decode, batch 1, {PROMPT}-token prompt, {NEW} new tokens, median of {a.runs} runs")
        print(f"memory bandwidth (torch sum of 1 GiB): {bw:.1f} GB/s")
        print("| gpt2 weights | transformers f32 tok/s | gpt2 tok/s | ratio | gpt2 ms/step | weight GB/s | of bandwidth |")
        print("|---|---|---|---|---|---|---|")
        for r in dec:
            print(f"| {r['dtype']} | {r['torch_f32_tok_s']:.1f} | {r['crate_tok_s']:.1f} | {r['ratio']:.2f}× "
                  f"| {r['decode_ms_per_step']:.2f} | {r['weight_gb_per_s']:.1f} | {100 * r['fraction_of_bandwidth']:.0f}% |")


if __name__ == "__main__":
    sys.exit(main())
