#!/usr/bin/env bash
# Compares the ua-parser and uaparser crates on uap-core's rules and test
# User-Agents (build time, parse time, peak RSS); medians of --runs runs.
# Extra arguments go to the comparison, e.g. `--runs 5` or `--uap-core DIR`.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/ua-compare" && pwd)"
export CARGO_TARGET_DIR="$dir/target"
cargo build --release --locked --quiet --manifest-path "$dir/Cargo.toml"
exec "$CARGO_TARGET_DIR/release/ua-compare" "$@"
