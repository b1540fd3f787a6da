#!/usr/bin/env bash
# Builds the seed corpus in fuzz/corpus/<target>/ (not committed): real CloudTrail files from
# ../shared/corpus/real when they are there, the sample generator's records, the Lambda event fixtures.
# Adds to an existing corpus (seeds are named by their hash), so a grown corpus is kept between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
REAL=${TOKENWATCH_REAL_CORPUS:-../shared/corpus/real}
if [[ ! -d $REAL ]]; then
  echo "seed.sh: no real CloudTrail corpus at $REAL; seeding from the sample generator and fixtures only" >&2
fi
# The main workspace's own build (not the fuzz one): the generator needs no instrumentation.
cargo run --quiet --locked -p tokenwatch-core --example fuzz_seeds -- fuzz/corpus "$REAL"
