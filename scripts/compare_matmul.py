#!/usr/bin/env python3
"""Side-by-side matrix-multiply speed: this crate's GEMM/GEMV vs PyTorch, same shapes, one run.

For each GPT-2 124M shape `A[M, K] · B[K, N] (+ bias)` it times, alternately,
  * PyTorch (N threads): `torch.addmm(bias, a, w)` with `w` `[K, N]` — what transformers'
    Conv1D layers run — or `F.linear(a, wte)` with `wte` `[N, K]` for the tied LM head
    (shape suffix `t`), in f32, and with `--bf16` also in bf16;
  * the crate: `cargo run --release --example matmul_speed -- --shape MxKxN[t] --dtype D --json`
    (RAYON_NUM_THREADS=N): `gemm` with the unpacked f32 weight (`raw`, packed per call, as the
    f32 model runs) and, with `--bf16`, pre-packed bf16 weights,
and prints median GFLOP/s (prefill) or weight GB/s (M = 1, decode) and the ratio crate/PyTorch.
Both sides also report GFLOP per CPU-second (Linux schedstat of all threads), which is less
sensitive to other processes on a shared machine (PyTorch's OpenMP threads spin while waiting,
which counts as CPU time).

    python3 scripts/compare_matmul.py [--threads 2] [--iters 10] [--bf16] [--json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from bench_common import cpu_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFILL = ["1024x768x2304", "1024x768x3072", "1024x3072x768", "256x768x50257t", "1024x768x50257t"]
DECODE = ["1x768x2304", "1x768x3072", "1x3072x768", "1x768x50257t"]


def cpu_seconds():
    total = 0
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total * 1e-9


def parse(shape):
    t = shape.endswith("t")
    m, k, n = (int(x) for x in shape.rstrip("t").split("x"))
    return m, k, n, t


def torch_time(shape, iters, dtype):
    m, k, n, t = parse(shape)
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(m, k, generator=g) - 0.5).to(dtype)
    if t:
        w = ((torch.rand(n, k, generator=g) - 0.5) * 0.04).to(dtype)
        fn = lambda: F.linear(a, w)
    else:
        w = ((torch.rand(k, n, generator=g) - 0.5) * 0.04).to(dtype)
        bias = torch.rand(n, generator=g).to(dtype)
        fn = lambda: torch.addmm(bias, a, w)
    with torch.no_grad():
        fn()
        times = []
        c0 = cpu_seconds()
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        cpu = (cpu_seconds() - c0) / iters
    med = statistics.median(times)
    flops = 2 * m * k * n
    wbytes = k * n * (4 if dtype == torch.float32 else 2)
    return {"median_seconds": med, "gflops": flops / med / 1e9, "weight_gb_per_s": wbytes / med / 1e9,
            "gflops_per_cpu_second": flops / cpu / 1e9 if cpu > 0 else None}


def crate_time(shape, iters, dtype, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        ["cargo", "run", "--release", "-q", "--example", "matmul_speed", "--",
         "--shape", shape, "--dtype", dtype, "--iters", str(iters), "--json"],
        capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--bf16", action="store_true", help="also compare bf16 weights")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    subprocess.run(["cargo", "build", "--release", "-q", "--example", "matmul_speed"], check=True, cwd=ROOT)
    variants = [("f32", torch.float32, "raw")] + ([("bf16", torch.bfloat16, "bf16")] if a.bf16 else [])
    rows = []
    for shape in PREFILL + DECODE:
        for label, tdtype, cdtype in variants:
            pt = torch_time(shape, a.iters, tdtype)
            rs = crate_time(shape, a.iters, cdtype, a.threads)
            rows.append({"shape": shape, "dtype": label, "decode": shape.startswith("1x"),
                         "torch": pt, "crate": rs, "ratio": pt["median_seconds"] / rs["median_seconds"]})
    info = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "threads": a.threads,
            "torch": torch.__version__, "kernel": rows[0]["crate"].get("kernel"), "rows": rows}
    if a.json:
        print(json.dumps(info, indent=1))
        return
    print(f"# matmul, {a.threads} threads, median of {a.iters}; {info['date']} · {info['cpu']} · "
          f"torch {info['torch']} · crate kernel {info['kernel']}")
    print("| shape M×K×N | dtype | PyTorch | gpt2 | ratio | PyTorch / gpt2 GFLOP per CPU-s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        unit, key = ("GB/s", "weight_gb_per_s") if r["decode"] else ("GFLOP/s", "gflops")
        pc, rc = r["torch"].get("gflops_per_cpu_second"), r["crate"].get("gflops_per_cpu_second")
        cpu = f"{pc:.0f} / {rc:.0f}" if pc and rc else "n/a"
        print(f"| {r['shape']} | {r['dtype']} | {r['torch'][key]:.1f} {unit} | {r['crate'][key]:.1f} {unit} "
              f"| {r['ratio']:.2f}× | {cpu} |")


if __name__ == "__main__":
    sys.exit(main())
