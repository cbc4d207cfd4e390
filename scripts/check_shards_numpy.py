#!/usr/bin/env python3
"""Check that shards written by the crate's `prepare_data` example load in NumPy with the right
tokens (issue 5 acceptance: "shards written by the crate load in numpy (np.load)").

Loads every `DIR/PREFIX_SPLIT_*.npy` with `np.load` (and `*.bin` with llm.c's layout:
256 int32 header, then uint16), concatenates them in shard-index order, and compares with the GPT-2
tokenization of the inputs done here in Python (transformers' GPT2TokenizerFast, as
fixtures/make_fixtures.py builds it): for each document, [50256] + ids, where a text file is one
document and a .jsonl file has one {"text": ...} per line.

    cargo run --release --example prepare_data -- --input a.txt b.jsonl --out /tmp/s --shard-size 500000
    python3 scripts/check_shards_numpy.py --dir /tmp/s --split train --input a.txt b.jsonl
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "fixtures"))
EOT = 50256


def load_shard(path):
    if path.endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
        assert arr.dtype == np.uint16 and arr.ndim == 1, (path, arr.dtype, arr.shape)
        return arr
    header = np.fromfile(path, dtype=np.int32, count=256)
    assert header[0] == 20240520 and header[1] == 1, (path, header[:3])
    arr = np.fromfile(path, dtype=np.uint16, offset=256 * 4)
    assert len(arr) == header[2], (path, len(arr), header[2])
    return arr


def documents(path):
    if path.endswith((".jsonl", ".ndjson")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["text"]
    else:
        with open(path, encoding="utf-8", newline="") as f:
            yield f.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--prefix", default="shard")
    ap.add_argument("--split", default="train")
    ap.add_argument("--input", nargs="+", required=True)
    args = ap.parse_args()

    # in shard-index order (with --split '*', fineweb naming interleaves val_000000, train_000001, ...)
    paths = sorted(glob.glob(os.path.join(args.dir, f"{args.prefix}_{args.split}_*.npy"))
                   + glob.glob(os.path.join(args.dir, f"{args.prefix}_{args.split}_*.bin")),
                   key=lambda p: int(os.path.splitext(p)[0].rsplit("_", 1)[1]))
    assert paths, "no shards found"
    got = np.concatenate([load_shard(p) for p in paths]).astype(np.int64)

    from make_fixtures import gpt2_tokenizer
    tok = gpt2_tokenizer()
    want = []
    for path in args.input:
        for doc in documents(path):
            want.append(EOT)
            want.extend(tok(doc, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    want = np.array(want, dtype=np.int64)
    ok = got.shape == want.shape and bool((got == want).all())
    print(json.dumps({"shards": [os.path.basename(p) for p in paths], "tokens": int(len(got)),
                      "expected_tokens": int(len(want)), "numpy": np.__version__, "identical": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
