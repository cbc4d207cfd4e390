#!/usr/bin/env python3
"""Side-by-side generation speed: this crate vs transformers' `generate`, same weights, one run.

Builds a randomly initialised GPT-2 124M with transformers (torch.manual_seed(0)), saves it with
`save_pretrained`, and times greedy decoding of a 16-token prompt (128 new tokens, EOS disabled):
  - transformers: `model.generate(ids, do_sample=False, max_new_tokens=N, min_new_tokens=N)`;
    time to first token = a `max_new_tokens=1` call, decode rate = (N - 1) / (t_N - t_1);
  - the crate: `cargo run --release --example generate -- --model DIR --greedy --ignore-eos
    --json` (time to first token and ms/token from its JSON; model loading is not timed).
Runs alternate (transformers, crate, transformers, ...) and medians are reported. Then batched
decoding: the same prompt repeated B = 1, 2, 4 times (`--num-samples B` for the crate, a [B, 16]
batch for transformers), aggregate decode tokens/s. Also measures memory bandwidth with a large
torch copy (bytes moved, read + write) and a large torch sum (bytes read), both 1 GiB with the same
thread count, best of 5, and prints how close decode gets to the bandwidth limit (f32 weight bytes
read per token / read bandwidth). torch runs with OMP_WAIT_POLICY=PASSIVE unless set otherwise. Usage (repo root):

    python3 scripts/compare_generate.py [--threads 2] [--repeats 3] [--new-tokens 128] [--json]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

# Under contention (other processes on the cores) OpenMP's default spin-waiting makes torch's
# multi-threaded decode 5-10x slower; passive waiting is what a fair shared-machine run needs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from bench_common import cpu_model

PROMPT = "The quick brown fox jumps over the lazy dog while the old man watches it."  # 16 tokens


def _best_seconds(fn, iters):
    fn()
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def copy_bandwidth(gib=1.0, iters=5):
    """Bytes moved per second (read + write) by a large torch copy (the script's thread count)."""
    src = torch.ones(int(gib * (1 << 30)) // 4)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best_seconds(lambda: dst.copy_(src), iters)


def read_bandwidth(gib=1.0, iters=5):
    """Bytes read per second by a large torch sum (one pass, no writes; the script's thread count)."""
    src = torch.ones(int(gib * (1 << 30)) // 4)
    return src.numel() * 4 / _best_seconds(lambda: src.sum(), iters)


def prompt_ids(env):
    out = subprocess.run(["cargo", "run", "--release", "-q", "--example", "tokenize", "--", "--text", PROMPT,
                          "--json"], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)["ids"]


def torch_generate(model, ids, batch, new_tokens):
    x = torch.tensor([ids] * batch, dtype=torch.long)
    mask = torch.ones_like(x)

    def run(n):
        t0 = time.perf_counter()
        out = model.generate(x, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                             pad_token_id=50256)
        return time.perf_counter() - t0, out[0, len(ids):].tolist()

    t1, _ = run(1)
    tn, toks = run(new_tokens)
    return {"ttft_ms": t1 * 1e3, "total_s": tn, "decode_tok_s": batch * (new_tokens - 1) / (tn - t1),
            "ms_per_token": (tn - t1) * 1e3 / (new_tokens - 1), "tokens": toks}


def crate_generate(model_dir, batch, new_tokens, env):
    out = subprocess.run(
        ["cargo", "run", "--release", "-q", "--example", "generate", "--", "--model", model_dir, "--prompt", PROMPT,
         "--greedy", "--ignore-eos", "--max-new-tokens", str(new_tokens), "--num-samples", str(batch), "--json"],
        capture_output=True, text=True, env=env, check=True)
    j = json.loads(out.stdout)
    ms = j["ms_per_token"]
    return {"ttft_ms": j["time_to_first_token_ms"], "total_s": j["total_seconds"], "decode_tok_s": batch * 1e3 / ms,
            "ms_per_token": ms, "tokens": j["samples"][0]["token_ids"]}


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    subprocess.run(["cargo", "build", "--release", "-q", "--example", "generate", "--example", "tokenize"],
                   check=True)
    ids = prompt_ids(env)
    assert len(ids) == 16, len(ids)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    weight_bytes = 4 * (sum(p.numel() for p in model.parameters()) - model.config.n_positions * model.config.n_embd)
    bw = copy_bandwidth()
    rbw = read_bandwidth()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        for b in [int(x) for x in a.batches.split(",")]:
            pt_runs, rs_runs = [], []
            for _ in range(a.repeats if b == 1 else max(1, a.repeats - 1)):
                pt_runs.append(torch_generate(model, ids, b, a.new_tokens))
                rs_runs.append(crate_generate(d, b, a.new_tokens, env))
            same = sum(x == y for x, y in zip(pt_runs[0]["tokens"], rs_runs[0]["tokens"]))
            row = {"batch": b, "runs": len(pt_runs), "greedy_tokens_equal": f"{same}/{a.new_tokens}"}
            for name, runs in [("torch", pt_runs), ("crate", rs_runs)]:
                for k in ["ttft_ms", "total_s", "decode_tok_s", "ms_per_token"]:
                    row[f"{name}_{k}"] = median_of(runs, k)
            row["decode_ratio"] = row["crate_decode_tok_s"] / row["torch_decode_tok_s"]
            row["ttft_ratio"] = row["torch_ttft_ms"] / row["crate_ttft_ms"]
            rows.append(row)
    floor_ms = weight_bytes / rbw * 1e3  # reading the weights once at the measured read rate
    copy_floor_ms = weight_bytes / (bw / 2) * 1e3  # ... at half the copy's bytes moved
    info = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "threads": a.threads,
            "load_average": os.getloadavg(), "torch": torch.__version__, "transformers": transformers.__version__,
            "new_tokens": a.new_tokens, "prompt_tokens": len(ids), "weight_bytes_per_token": weight_bytes,
            "copy_bandwidth_gb_s": bw / 1e9, "read_bandwidth_gb_s": rbw / 1e9,
            "bandwidth_floor_ms_per_token": floor_ms, "copy_floor_ms_per_token": copy_floor_ms, "rows": rows}
    if a.json:
        print(json.dumps(info, indent=1))
        return
    print(f"{info['date']}  {info['cpu']}  threads={a.threads}  load={info['load_average']}  "
          f"torch {torch.__version__}  transformers {transformers.__version__}")
    print(f"memcpy 1 GiB: {bw / 1e9:.1f} GB/s moved (read + write); sum 1 GiB: {rbw / 1e9:.1f} GB/s read; "
          f"f32 weights read per token: {weight_bytes / 1e6:.0f} MB -> floor {floor_ms:.1f} ms/token at the read "
          f"rate ({copy_floor_ms:.1f} ms at half the copy rate)")
    print("batch | transformers: ttft ms, decode tok/s, ms/step | crate: ttft ms, decode tok/s, ms/step | "
          "decode ratio | ttft ratio | same greedy tokens | floor / crate ms per step")
    for r in rows:
        frac = floor_ms / r["crate_ms_per_token"] * 100
        print(f"{r['batch']:5} | {r['torch_ttft_ms']:8.1f} {r['torch_decode_tok_s']:8.1f} {r['torch_ms_per_token']:7.1f} | "
              f"{r['crate_ttft_ms']:8.1f} {r['crate_decode_tok_s']:8.1f} {r['crate_ms_per_token']:7.1f} | "
              f"{r['decode_ratio']:5.2f}x | {r['ttft_ratio']:5.2f}x | {r['greedy_tokens_equal']} | {frac:4.0f}%")


if __name__ == "__main__":
    main()
