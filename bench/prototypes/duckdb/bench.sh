#!/usr/bin/env bash
# bench.sh SIZE LAYOUT NBUILDS "BUILD_OPTS" NQUERY "CONFIG1,CONFIG2,..." [NQUERY_EXTRA "CONFIGS_EXTRA"]
# Builds stores/SIZE-LAYOUT.duckdb NBUILDS times, then runs the query harness
# NQUERY times per configuration (each in a fresh process). Appends to results/SIZE.log.
# e.g. ./bench.sh 1000000 wide 3 "" 3 ",--memory-limit 256MB,--approx"
set -euo pipefail
cd "$(dirname "$0")"
size=$1; layout=$2; nb=$3; bopts=$4; nq=$5; cfgs=$6
bin=target/release/proto-duckdb
src=${PROTO_DATA:?set PROTO_DATA (see ../README.md)}/demo-$size/data/tally.db
ref=$PROTO_DATA/reference/$size
out=results/$size.log
db=stores/$size-$layout.duckdb
mkdir -p results stores
for i in $(seq 1 $nb); do
  echo "# build $layout $bopts run $i: $(uptime)" >> $out
  $bin build "$src" "$db" --layout $layout $bopts | tee -a $out
done
IFS=',' read -ra C <<< "$cfgs"
for cfg in "${C[@]}"; do
  for i in $(seq 1 $nq); do
    echo "# query $layout '$cfg' run $i: $(uptime)" >> $out
    $bin query "$db" "$ref" --layout $layout --threads 2 $cfg 2>>results/$size.stderr | tee -a $out | cut -c1-200
  done
done
