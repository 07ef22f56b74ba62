#!/usr/bin/env bash
# Dashboard query benchmark: fills databases with `tally demo` (SIZES pageviews
# each, spread over DAYS days), then times the Stats API calls one dashboard
# view makes, for a 30-day and a 12-month view: aggregate with comparison,
# timeseries, top-10 breakdowns of pages, sources, countries, browsers and
# devices, and the pages breakdown again with a filter. After one untimed
# view (the first filtered report loads the site's recent traffic into
# memory; its time is printed), each view is timed RUNS times; the median is
# reported, with the ratio of the largest size to the smallest.
#
# Requirements: python3, a Rust toolchain.
# Usage: bench/dashboard.sh
#   SIZES="100000 1000000 10000000" DAYS=400 RUNS=7 bench/dashboard.sh
set -euo pipefail

SIZES=${SIZES:-"100000 1000000 10000000"}
DAYS=${DAYS:-400}
RUNS=${RUNS:-7}

cd "$(dirname "$0")/.."
cargo build --release --bin tally
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
TALLY=$TARGET_DIR/release/tally
WORK=$(mktemp -d -t tally-dash.XXXXXX)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PID=

for size in $SIZES; do
    dir=$WORK/$size
    mkdir -p "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat > "$dir/tally.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[storage]
data_dir = "$dir/data"
[retention]
raw_events_days = 760
TOML
    "$TALLY" --config "$dir/tally.toml" site add example.com >/dev/null 2>&1
    echo "== filling $size pageviews over $DAYS days"
    "$TALLY" --config "$dir/tally.toml" demo --site example.com --events "$size" --days "$DAYS" --seed 1 2>/dev/null
    key=$("$TALLY" --config "$dir/tally.toml" api-key create bench 2>/dev/null | tail -n 1)
    "$TALLY" --config "$dir/tally.toml" serve 2>"$dir/log" &
    PID=$!
    until curl -fs "http://127.0.0.1:$port/api/health" >/dev/null 2>&1; do sleep 0.2; done
    db_mb=$(python3 -c "import os; print(round(sum(os.path.getsize(os.path.join('$dir/data', f)) for f in os.listdir('$dir/data')) / 1048576, 1))")
    python3 - "$port" "$key" "$RUNS" "$size" "$db_mb" <<'PY' | tee -a "$WORK/results"
import json, statistics, sys, time, urllib.request
port, key, runs, size, db_mb = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
base = f"http://127.0.0.1:{port}/api/v1/stats/"
def view(period):
    q = f"site_id=example.com&period={period}"
    calls = [f"aggregate?{q}&metrics=visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration&compare=previous_period",
             f"timeseries?{q}&metrics=visitors,pageviews"]
    for prop in ["event:page", "visit:source", "visit:country", "visit:browser", "visit:device"]:
        calls.append(f"breakdown?{q}&property={prop}&limit=10")
    calls.append(f"breakdown?{q}&property=event:page&limit=10&filters=visit:source==Google")
    return calls
def health():
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health") as r:
        return json.load(r)
def run_view(period):
    start = time.perf_counter()
    for call in view(period):
        req = urllib.request.Request(base + call, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req) as r:
            json.load(r)
    return (time.perf_counter() - start) * 1000
# Cold: the first filtered report of a site reads SQLite and starts loading
# the site's recent traffic into memory; the timed runs begin once loaded.
cold = run_view("30d")
loading_started = time.perf_counter()
while health()["recent_traffic"]["sites_loading"] > 0:
    time.sleep(0.05)
print(f"size {size}: first 30d view {cold:.1f} ms, then recent traffic loaded in {(time.perf_counter() - loading_started) * 1000:.0f} ms more")
for period in ["30d", "12mo"]:
    times = []
    for _ in range(runs):
        times.append(run_view(period))
    print(f"size {size} period {period}: median {statistics.median(times):.1f} ms (min {min(times):.1f}, max {max(times):.1f}) db {db_mb} MiB")
PY
    kill "$PID"; wait "$PID" 2>/dev/null || true
    PID=
done

echo "== summary"
python3 - "$WORK/results" <<'PY'
import re, sys
rows = [re.match(r"size (\d+) period (\S+): median ([\d.]+)", l) for l in open(sys.argv[1])]
by = {}
for m in rows:
    if m:
        by.setdefault(m.group(2), []).append((int(m.group(1)), float(m.group(3))))
for period, xs in by.items():
    xs.sort()
    print(f"{period}: " + ", ".join(f"{s:,} → {t:.1f} ms" for s, t in xs) +
          (f"; ratio largest/smallest {xs[-1][1] / xs[0][1]:.1f}" if len(xs) > 1 else ""))
PY
