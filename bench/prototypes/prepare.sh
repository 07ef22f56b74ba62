#!/usr/bin/env bash
# Prepares the data both read-model prototypes are measured on (see
# README.md): for each SIZE, a database filled by `tally demo` (SIZE
# pageviews of example.com over 60 days, seed 1) and the reference answers
# of this build's Stats API on a copy of it, one JSON file per call.
#
# Usage: PROTO_DATA=/some/dir bench/prototypes/prepare.sh [SIZE...]
#        (default sizes: 1000000 10000000)
set -euo pipefail
: "${PROTO_DATA:?set PROTO_DATA to a directory for the databases and answers}"
cd "$(dirname "$0")/../.."
cargo build --release --bin tally
TALLY=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/tally
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 10000000)
for size in "${sizes[@]}"; do
    dir=$PROTO_DATA/demo-$size
    rm -rf "$dir" && mkdir -p "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$dir/tally.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[storage]
data_dir = "$dir/data"
[retention]
raw_events_days = 760
TOML
    "$TALLY" --config "$dir/tally.toml" site add example.com >/dev/null
    "$TALLY" --config "$dir/tally.toml" demo --site example.com --events "$size" --days 60 --seed 1
    key=$("$TALLY" --config "$dir/tally.toml" api-key create bench | tail -n 1)
    # The server writes to its database: it answers from a copy.
    serve=$PROTO_DATA/serve-$size
    rm -rf "$serve" && mkdir -p "$serve" && cp -a "$dir/data" "$serve/data"
    sed "s|$dir/data|$serve/data|" "$dir/tally.toml" >"$serve/tally.toml"
    "$TALLY" --config "$serve/tally.toml" serve 2>"$serve/log" &
    pid=$!
    until curl -fs "http://127.0.0.1:$port/api/health" >/dev/null 2>&1; do sleep 0.1; done
    out=$PROTO_DATA/reference/$size
    rm -rf "$out" && mkdir -p "$out"
    python3 - "$port" "$key" "$out" <<'PY'
import json, sys, urllib.parse, urllib.request
port, key, out = sys.argv[1:]
calls = []
for period in ["30d", "12mo"]:
    for fi, f in enumerate(["visit:source==Google", "visit:source==Google;visit:browser==Chrome", "event:page==/blog**"]):
        q = f"site_id=example.com&period={period}&date=2026-12-07&filters=" + urllib.parse.quote(f)
        calls.append((f"{period}-f{fi}-aggregate", f"aggregate?{q}&metrics=visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration&compare=previous_period"))
        prev = "2026-10-09,2026-11-07" if period == "30d" else "2025-01-01,2025-12-31"
        qp = f"site_id=example.com&period=custom&date={prev}&filters=" + urllib.parse.quote(f)
        calls.append((f"{period}-f{fi}-aggregate-previous", f"aggregate?{qp}&metrics=visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration"))
        calls.append((f"{period}-f{fi}-timeseries", f"timeseries?{q}&metrics=visitors,pageviews"))
        for prop in ["event:page", "visit:source", "visit:country", "visit:browser", "visit:device"]:
            calls.append((f"{period}-f{fi}-breakdown-{prop.replace(':', '_')}", f"breakdown?{q}&property={prop}&limit=10"))
with open(f"{out}/calls.txt", "w") as fh:
    for name, url in calls:
        fh.write(f"{name}\t{url}\n")
for name, url in calls:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/stats/{url}", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=900) as r:
        body = json.load(r)
    with open(f"{out}/{name}.json", "w") as fh:
        json.dump(body, fh, indent=1)
PY
    kill "$pid"
    wait "$pid" || true
    rm -rf "$serve"
done
