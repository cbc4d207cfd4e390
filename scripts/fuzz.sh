#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one at a time, single worker, nice'd.
#
#   scripts/fuzz.sh                      # every target: until 1,000,000 runs or 10 minutes each
#   scripts/fuzz.sh smoke                # every target: 2,000 runs (CI smoke, seconds each)
#   scripts/fuzz.sh run TARGET [SECONDS] [RUNS]
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). The working
# corpus grows in fuzz/corpus/TARGET (git-ignored); the committed seeds in fuzz/seeds/TARGET are
# read-only inputs. Crashes land in fuzz/artifacts/TARGET. Prints one summary line per target:
# `fuzz TARGET: N runs in S s (corpus C inputs)`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
unset CARGO_TARGET_DIR   # the fuzz crate keeps its own target dir (fuzz/target): other RUSTFLAGS

TARGETS=(safetensors_load safetensors_header config_json tokenizer_decode token_shard loader_restore text_tokenize forward_cache hellaswag_jsonl sampling_options)

max_len() {
  case "$1" in
    safetensors_load|safetensors_header) echo 65536 ;;
    text_tokenize|tokenizer_decode|hellaswag_jsonl) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

# Per-input time limit: the tokenizer targets build texts of up to 4 MiB from a recipe (one long
# "word" of them takes > 10 s under ASan + coverage instrumentation, ~1 s in a release build).
timeout_s() {
  case "$1" in
    text_tokenize|tokenizer_decode) echo 120 ;;
    *) echo 10 ;;
  esac
}

run() {
  local target=$1 secs=${2:-600} runs=${3:-1000000}
  mkdir -p "corpus/$target"
  local log
  log=$(mktemp)
  # -malloc_limit_mb: any single allocation above 256 MiB is a crash (inputs are ≤ 64 KiB).
  if ! CARGO_BUILD_JOBS=1 nice -n 10 cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
      -runs="$runs" -max_total_time="$secs" -max_len="$(max_len "$target")" -timeout="$(timeout_s "$target")" \
      -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 >"$log" 2>&1; then
    mkdir -p "artifacts/$target"
    cp "$log" "artifacts/$target/last-failure.log"
    grep -v '^ *[0-9]*: \|^ *at \|^#[0-9]' "$log" | tail -60
    echo "fuzz $target: FAILED (full log: fuzz/artifacts/$target/last-failure.log)"
    rm -f "$log"
    return 1
  fi
  local done_line
  done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)
  local n s
  n=$(echo "$done_line" | awk '{print $2}')
  s=$(echo "$done_line" | awk '{print $5}')
  echo "fuzz $target: ${n:-?} runs in ${s:-?} s (corpus $(ls "corpus/$target" | wc -l) inputs)"
  rm -f "$log"
}

case "${1:-all}" in
  all) rc=0; for t in "${TARGETS[@]}"; do run "$t" 600 1000000 || rc=1; done; exit $rc ;;
  smoke) for t in "${TARGETS[@]}"; do run "$t" 30 2000; done ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 [all|smoke|run TARGET [SECONDS] [RUNS]]" >&2; exit 2 ;;
esac
