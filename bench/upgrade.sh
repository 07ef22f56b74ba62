#!/usr/bin/env bash
# Upgrade benchmark: a start that must rebuild every rollup, under ingest.
#
# Fills a database with `tally demo` (SIZE pageviews over DAYS days), then
# asks for a rebuild of the rollups the way a migration that changes them
# does (`meta.rollups_rebuild`), and starts the server while wrk stands by:
# wrk sends events (bench/ingest.lua) for DURATION from the moment the server
# listens, while the rebuild runs in the background. Then, once the rebuild
# is done, the same wrk run again as the baseline (no rebuild) on the same
# server.
#
# wrk offers a steady RATE of events a second (default 2,000: a busy site's
# peak; the sites the product is made for average about 120), paced per
# connection, so a refusal means the rebuild got in ingest's way, not that
# the machine is saturated. RATE=0 sends as fast as the server answers: a
# measure of capacity during the rebuild against after it, where a loaded
# machine may shed some requests with 503 in both runs.
#
# Prints: how long the server took to listen, how long the rebuild took,
# both wrk runs (requests/s, p99, non-2xx, socket errors) and their ratios,
# whether every 202 was stored, and whether the rebuilt rollups (the
# unfiltered 12-month aggregate) count every stored pageview exactly once.
# Exits non-zero when a request was refused or lost, or the counts differ.
#
# Requirements: wrk (apt-get install -y wrk), python3, curl, a Rust toolchain.
# Usage: bench/upgrade.sh
#   SIZE=1000000 DAYS=60 DURATION=30s RATE=2000 bench/upgrade.sh
set -euo pipefail

SIZE=${SIZE:-10000000}
DAYS=${DAYS:-60}
DURATION=${DURATION:-30s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
RATE=${RATE:-2000}
if ((RATE > 0)); then
    export WRK_DELAY_MS=$((CONNECTIONS * 1000 / RATE))
fi

cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/lib.sh
source bench/lib.sh
for tool in wrk python3 curl cargo; do
    if ! command -v "$tool" >/dev/null; then
        echo "upgrade.sh: $tool not found (wrk: apt-get install -y wrk)" >&2
        exit 1
    fi
done

cargo build --release --bin tally
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
TALLY=$TARGET_DIR/release/tally
WORK=$(mktemp -d -t tally-upgrade.XXXXXX)
TALLY_PID=""
POLLER_PID=""
KEEP_WORK=0
cleanup() {
    for pid in "$POLLER_PID" "$TALLY_PID"; do
        [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
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
[retention]
raw_events_days = 760
TOML
T() { "$TALLY" --config "$WORK/tally.toml" "$@"; }
T site add example.com >/dev/null 2>&1
echo "== filling $SIZE pageviews over $DAYS days"
T demo --site example.com --events "$SIZE" --days "$DAYS" --seed 1 2>/dev/null
KEY=$(T api-key create bench 2>/dev/null | tail -n 1)

sql() {
    python3 - "$WORK/data/tally.db" "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
row = db.execute(sys.argv[2]).fetchone()
db.commit()
print(row[0] if row else "")
PY
}
# What migrations 3 and 4 did: every rollup is rebuilt from the raw events.
sql "INSERT INTO meta (key, value) VALUES ('rollups_rebuild', 'all')
     ON CONFLICT (key) DO UPDATE SET value = excluded.value RETURNING value" >/dev/null
BEFORE=$(sql "SELECT COUNT(*) FROM events")
echo "== $BEFORE events stored; rollup rebuild requested"

now_ms() { date +%s%3N; }
START_MS=$(now_ms)
"$TALLY" --config "$WORK/tally.toml" serve 2>"$WORK/tally.log" &
TALLY_PID=$!
ADDR=$(wait_listening "$WORK/tally.log" "$TALLY_PID" 120)
LISTEN_MS=$(($(now_ms) - START_MS))
echo "listening after $LISTEN_MS ms"

# Records when the health check first counts no rebuilding site.
poll_rebuild() {
    while true; do
        n=$(curl -fsS "http://$ADDR/api/health" 2>/dev/null |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["rollups"]["rebuilding_sites"])' || echo "?")
        if [[ $n == 0 ]]; then
            echo $(($(now_ms) - START_MS)) >"$WORK/rebuilt"
            return
        fi
        sleep 0.5
    done
}
poll_rebuild &
POLLER_PID=$!

wrk_run() { # $1 name
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        -s "$ROOT/bench/ingest.lua" "http://$ADDR/api/event" >"$WORK/wrk-$1.txt" 2>&1
    grep '^RESULT ' "$WORK/wrk-$1.txt" || { cat "$WORK/wrk-$1.txt" >&2; exit 1; }
}
declare -A R
parse() { # $1 name, $2 RESULT line
    for kv in ${2#RESULT }; do R[$1,${kv%%=*}]=${kv#*=}; done
}
parse during "$(wrk_run during)"
REBUILDING_AFTER_WRK=$([[ -s $WORK/rebuilt ]] && echo no || echo yes)
for _ in $(seq 7200); do
    [[ -s $WORK/rebuilt ]] && break
    sleep 0.5
done
[[ -s $WORK/rebuilt ]] || { echo "upgrade.sh: the rebuild did not finish within an hour" >&2; exit 1; }
POLLER_PID=""
REBUILT_MS=$(cat "$WORK/rebuilt")
sleep 2 # requests cut off by wrk's deadline finish; the rollups catch up
AFTER_DURING=$(sql "SELECT COUNT(*) FROM events")
parse after "$(wrk_run after)"
sleep 3
AFTER=$(sql "SELECT COUNT(*) FROM events")
PAGEVIEWS=$(sql "SELECT COUNT(*) FROM events WHERE name = 'pageview'")
API=$(curl -fsS -H "Authorization: Bearer $KEY" \
    "http://$ADDR/api/v1/stats/aggregate?site_id=example.com&period=12mo&metrics=pageviews" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["results"]["pageviews"]["value"])')
kill -TERM "$TALLY_PID"
wait "$TALLY_PID" || true
TALLY_PID=""

status=0
check() { # $1 label, $2 condition result (0 ok)
    if [[ $2 == 0 ]]; then echo "$1: PASS"; else echo "$1: FAIL"; status=1; fi
}
echo
echo "== summary (wrk -t$THREADS -c$CONNECTIONS -d$DURATION, RATE=$RATE, $SIZE demo pageviews over $DAYS days)"
echo "listening after: $LISTEN_MS ms; rollups rebuilt after: $REBUILT_MS ms (still rebuilding when the first wrk run ended: $REBUILDING_AFTER_WRK)"
for run in during after; do
    printf '%-7s req/s %10.1f  p99 %8.2f ms  non-2xx %s  socket errors %s\n' "$run" \
        "${R[$run,rps]}" "$(awk -v us="${R[$run,p99_us]}" 'BEGIN { print us / 1000 }')" \
        "${R[$run,non2xx]}" "${R[$run,socket_errors]}"
done
awk -v d="${R[during,rps]}" -v a="${R[after,rps]}" -v dp="${R[during,p99_us]}" -v ap="${R[after,p99_us]}" \
    'BEGIN { printf "ratio during rebuild / after: events/s %.3f, p99 %.3f\n", d / a, dp / ap }'
ok_during=$((${R[during,requests]} - ${R[during,non2xx]}))
ok_after=$((${R[after,requests]} - ${R[after,non2xx]}))
check "no request refused during the rebuild (non-2xx ${R[during,non2xx]}, socket errors ${R[during,socket_errors]})" \
    $((${R[during,non2xx]} + ${R[during,socket_errors]}))
check "every 202 stored (during: $((AFTER_DURING - BEFORE)) >= $ok_during; after: $((AFTER - AFTER_DURING)) >= $ok_after)" \
    $(((AFTER_DURING - BEFORE) >= ok_during && (AFTER - AFTER_DURING) >= ok_after ? 0 : 1))
check "rebuilt rollups count every stored pageview once (API $API, stored $PAGEVIEWS)" \
    $((API == PAGEVIEWS ? 0 : 1))
problems=$(grep -cE ' (WARN|ERROR) ' "$WORK/tally.log" || true)
echo "tally log: $problems WARN/ERROR lines"
grep -E ' (WARN|ERROR) ' "$WORK/tally.log" | head -n 5 || true
((status == 0)) || KEEP_WORK=1
exit $status
