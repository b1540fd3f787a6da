#!/usr/bin/env bash
# `make fuzz`: seeds the corpus, builds every target once, runs each for FUZZ_SECONDS, prints one line of
# libFuzzer's figures per target, and fails if any target found a crash, a timeout or an out-of-memory.
#
#   FUZZ_SECONDS  seconds per target (default 60)
#   FUZZ_TARGETS  targets to run (default: all of them, as listed by `cargo fuzz list`)
#   FUZZ_MAX_LEN  largest input libFuzzer makes, in bytes (default 8192)
#   FUZZ_ARGS     more libFuzzer flags, e.g. "-jobs=2 -workers=2"
#
# cargo fuzz needs nightly-only rustc flags (sanitizers, coverage passes); RUSTC_BOOTSTRAP=1 lets the
# stable toolchain take them, so CI and fresh machines need no nightly.
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_MAX_LEN=${FUZZ_MAX_LEN:-8192}
FUZZ_ARGS=${FUZZ_ARGS:-}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked
fi

echo "== seeding fuzz/corpus/"
./seed.sh

echo "== building every target (release, debug assertions, AddressSanitizer)"
cargo fuzz build

TARGETS=${FUZZ_TARGETS:-$(cargo fuzz list)}
mkdir -p logs
declare -a summary
failed=0
for target in $TARGETS; do
  case $target in
    event | logs | notification) dict=dict/envelope.dict ;;
    gzip_raw) dict=dict/gzip.dict ;;
    *) dict=dict/cloudtrail.dict ;;
  esac
  log=logs/$target.log
  echo "== $target: ${FUZZ_SECONDS}s, corpus/$target, $dict"
  status=ok
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  if ! cargo fuzz run "$target" "corpus/$target" -- \
      -max_total_time="$FUZZ_SECONDS" -max_len="$FUZZ_MAX_LEN" -dict="$dict" \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $FUZZ_ARGS >"$log" 2>&1; then
    status=FAILED
    failed=1
    grep -E "panicked at|ERROR: libFuzzer|Test unit written" "$log" | head -5 || true
  fi
  runs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  speed=$(grep -oE '^stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  rss=$(grep -oE '^stat::peak_rss_mb: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  slowest=$(grep -oE '^stat::slowest_unit_time_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || echo "?")
  ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || echo "?")
  corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$last" | sed 's/corp: //' || echo "?")
  summary+=("$(printf '%-13s %-7s %10s runs %7s exec/s  cov %-5s ft %-6s corpus %-12s rss %sMB  slowest %ss' \
    "$target" "$status" "$runs" "$speed" "$cov" "$ft" "$corp" "$rss" "$slowest")")
done

echo
echo "== results (${FUZZ_SECONDS}s per target; logs in fuzz/logs/, crashers in fuzz/artifacts/<target>/)"
printf '%s\n' "${summary[@]}"
if ((failed)); then
  echo "A target failed. Reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>"
  echo "Fix it, then keep the input in crates/core/tests/fuzz_regressions/<target>/ (cargo test replays it)."
  exit 1
fi
