#!/usr/bin/env bash
# bench.sh [SIZES...]: builds each store 3 times and runs the query harness 3
# times (fresh processes), then prints medians. Logs go to results/.
set -euo pipefail
cd "$(dirname "$0")"
sizes=("${@:-1000000 10000000}")
[ $# -gt 0 ] || sizes=(1000000 10000000)
mkdir -p results
cargo build --release --quiet
for size in "${sizes[@]}"; do
  db=${PROTO_DATA:?set PROTO_DATA (see ../README.md)}/demo-$size/data/tally.db
  ref=$PROTO_DATA/reference/$size
  for i in 1 2 3; do
    uptime | tee -a results/uptime.log
    rm -rf store-$size
    ./target/release/harness build "$db" store-$size > results/build-$size-$i.log
    tail -n 1 results/build-$size-$i.log
  done
  for i in 1 2 3; do
    uptime | tee -a results/uptime.log
    ./target/release/harness query store-$size "$ref" --first "${FIRST:-12mo-f0}" --threads "${THREADS:-1}" > results/query-$size-$i.log
    grep -E "first view|peak RssAnon" results/query-$size-$i.log
  done
done
python3 summarize.py "${sizes[@]}"
