#!/usr/bin/env bash
# Ingest throughput benchmark: `tally serve` against the HTTP-only ceiling
# (examples/ceiling.rs), both driven by wrk with bench/ingest.lua.
#
# Requirements: wrk (apt-get install -y wrk), python3 (reads the SQLite
# database), curl, a Rust toolchain.
#
# Usage: bench/ingest.sh
#   DURATION=20s CONNECTIONS=32 THREADS=2 RUNS=3 bench/ingest.sh
#
# Runs alternate (tally, ceiling, tally, ceiling, ...) so machine noise hits
# both. For each run: requests/s, p50/p99 latency, non-2xx responses and the
# server's peak RSS (VmRSS sampled every 0.5 s). After each tally run the rows
# added to `events` must be at least the 2xx responses wrk counted ("every 202
# stored"); otherwise the script prints FAIL and exits 1.
set -euo pipefail

DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
RUNS=${RUNS:-3}

cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/lib.sh
source bench/lib.sh

for tool in wrk python3 curl cargo; do
    if ! command -v "$tool" >/dev/null; then
        echo "ingest.sh: $tool not found (wrk: apt-get install -y wrk)" >&2
        exit 1
    fi
done

echo "== building (release)"
cargo build --release --bin tally --example ceiling
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
TALLY=$TARGET_DIR/release/tally
CEILING=$TARGET_DIR/release/examples/ceiling

WORK=$(mktemp -d -t tally-bench.XXXXXX)
TALLY_PID=""
CEILING_PID=""
SAMPLER_PID=""
KEEP_WORK=0

cleanup() {
    for pid in "$SAMPLER_PID" "$TALLY_PID" "$CEILING_PID"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ $KEEP_WORK == 1 ]]; then
        echo "(logs and database kept in $WORK)"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

cat >"$WORK/tally.toml" <<TOML
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

[storage]
data_dir = "$WORK/data"
TOML

# Samples VmRSS of $1 every 0.5 s and keeps the maximum (KiB) in file $2.
sample_rss() {
    local pid=$1 out=$2 max=0 kib
    while kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) && [[ -n $kib ]]; do
        ((kib > max)) && max=$kib
        echo "$max" >"$out"
        sleep 0.5
    done
}

count_events() {
    python3 - "$WORK/data/tally.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(db.execute("SELECT count(*) FROM events").fetchone()[0])
PY
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "== starting servers (work dir $WORK)"
"$TALLY" --config "$WORK/tally.toml" site add example.com
"$TALLY" --config "$WORK/tally.toml" serve 2>"$WORK/tally.log" &
TALLY_PID=$!
TALLY_ADDR=$(wait_listening "$WORK/tally.log" "$TALLY_PID")
"$CEILING" 127.0.0.1:0 2>"$WORK/ceiling.log" &
CEILING_PID=$!
CEILING_ADDR=$(wait_listening "$WORK/ceiling.log" "$CEILING_PID")

for _ in $(seq 100); do
    curl -fsS "http://$TALLY_ADDR/api/health" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://$TALLY_ADDR/api/health" >/dev/null

# One event by hand: it must be acknowledged and not dropped.
smoke=$(curl -sS -o /dev/null -D - -X POST "http://$TALLY_ADDR/api/event" \
    -H 'Content-Type: text/plain' \
    -H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0' \
    -H 'X-Forwarded-For: 203.0.113.7' \
    --data '{"n":"pageview","u":"https://example.com/","r":"https://news.ycombinator.com/","w":1280}')
if ! grep -q '^HTTP/1.1 202' <<<"$smoke" || grep -qi '^x-tally-dropped' <<<"$smoke"; then
    echo "ingest.sh: smoke event not stored:" >&2
    echo "$smoke" >&2
    exit 1
fi
echo "tally   pid $TALLY_PID on $TALLY_ADDR"
echo "ceiling pid $CEILING_PID on $CEILING_ADDR"
echo "wrk: -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s bench/ingest.lua; $RUNS runs each, interleaved"

declare -A RPS P50 P99 NON2XX RSS
STORED_OK=1

# Runs wrk against server $1 (tally|ceiling) at $2 with PID $3, run number $4.
bench_run() {
    local name=$1 addr=$2 pid=$3 run=$4
    local out="$WORK/wrk-$name-$run.txt" rss_file="$WORK/rss-$name-$run" before=0
    [[ $name == tally ]] && before=$(count_events)
    echo 0 >"$rss_file"
    sample_rss "$pid" "$rss_file" &
    SAMPLER_PID=$!
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        -s "$ROOT/bench/ingest.lua" "http://$addr/api/event" >"$out" 2>&1
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    local line
    line=$(grep '^RESULT ' "$out") || { echo "ingest.sh: no result from wrk:" >&2; cat "$out" >&2; exit 1; }
    local -A r
    for kv in ${line#RESULT }; do r[${kv%%=*}]=${kv#*=}; done
    local key="$name,$run"
    RPS[$key]=${r[rps]}
    P50[$key]=$(awk -v us="${r[p50_us]}" 'BEGIN { printf "%.2f", us / 1000 }')
    P99[$key]=$(awk -v us="${r[p99_us]}" 'BEGIN { printf "%.2f", us / 1000 }')
    NON2XX[$key]=${r[non2xx]}
    RSS[$key]=$(awk -v k="$(cat "$rss_file")" 'BEGIN { printf "%.1f", k / 1024 }')
    local extra=""
    if [[ $name == tally ]]; then
        sleep 1 # let requests cut off by wrk's deadline finish
        local after ok added
        after=$(count_events)
        added=$((after - before))
        ok=$((${r[requests]} - ${r[non2xx]}))
        if ((added >= ok)); then
            extra="stored $added >= 2xx $ok: PASS"
        else
            extra="stored $added < 2xx $ok: FAIL"
            STORED_OK=0
        fi
    fi
    printf '%-7s run %d: %10.1f req/s  p50 %6s ms  p99 %6s ms  non-2xx %-6s socket errors %-4s peak RSS %6s MiB  %s\n' \
        "$name" "$run" "${r[rps]}" "${P50[$key]}" "${P99[$key]}" "${r[non2xx]}" "${r[socket_errors]}" "${RSS[$key]}" "$extra"
}

for run in $(seq "$RUNS"); do
    bench_run tally "$TALLY_ADDR" "$TALLY_PID" "$run"
    bench_run ceiling "$CEILING_ADDR" "$CEILING_PID" "$run"
done

hwm() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
TALLY_HWM=$(hwm "$TALLY_PID")
CEILING_HWM=$(hwm "$CEILING_PID")

echo "== stopping servers"
kill -TERM "$CEILING_PID"
wait "$CEILING_PID" || true
CEILING_PID=""
kill -TERM "$TALLY_PID"
tally_rc=0
wait "$TALLY_PID" || tally_rc=$?
TALLY_PID=""
echo "tally exited with status $tally_rc"
problems=$(grep -cE ' (WARN|ERROR) ' "$WORK/tally.log" || true)
echo "tally log: $problems WARN/ERROR lines"
grep -E ' (WARN|ERROR) ' "$WORK/tally.log" | head -n 5 || true

col() { # $1 array name, $2 server
    local -n arr=$1
    local vals=() run
    for run in $(seq "$RUNS"); do vals+=("${arr[$2,$run]}"); done
    median "${vals[@]}"
}

echo
echo "== summary: median of $RUNS runs (wrk -t$THREADS -c$CONNECTIONS -d$DURATION)"
printf '%-8s %12s %9s %9s %9s %14s\n' server "req/s" "p50 ms" "p99 ms" non-2xx "peak RSS MiB"
for s in tally ceiling; do
    printf '%-8s %12.1f %9.2f %9.2f %9s %14.1f\n' "$s" "$(col RPS "$s")" "$(col P50 "$s")" "$(col P99 "$s")" "$(col NON2XX "$s")" "$(col RSS "$s")"
done
echo "VmHWM at end: tally $TALLY_HWM MiB, ceiling $CEILING_HWM MiB"
awk -v t="$(col RPS tally)" -v c="$(col RPS ceiling)" 'BEGIN { printf "ratio tally/ceiling (events/s): %.3f\n", t / c }'

status=0
if ((STORED_OK)); then
    echo "every 202 stored: PASS"
else
    echo "every 202 stored: FAIL"
    status=1
fi
if ((tally_rc != 0)); then
    echo "tally did not exit cleanly (status $tally_rc): FAIL"
    status=1
fi
((status == 0)) || KEEP_WORK=1
exit "$status"
