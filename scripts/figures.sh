#!/usr/bin/env bash
# Regenerates FIGURES.md: every figure that README.md, BENCHMARKS.md, RELIABILITY.md and the API
# docs quote, each the median over several runs with its range, stamped with commit, date,
# machine and command. See scripts/figures.py for what runs.
#
#   scripts/figures.sh            # full run of the release benches (a few minutes on 2 cores)
#   scripts/figures.sh --quick    # smoke run: small sizes, 1-2 runs, writes target/figures/FIGURES.quick.md
#   scripts/figures.sh --load     # the load-test section only (tests/load.rs at full size, 3 runs; long)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/figures.py "$@"
