#!/usr/bin/env bash
# Dashboard query benchmark: fills one database per size with `tally demo`
# (SIZES pageviews each, spread over DAYS days), starts a server on each,
# then times the Stats API calls one dashboard view makes, for a 30-day and
# a 12-month view: aggregate with comparison, timeseries, top-10 breakdowns
# of pages, sources, countries, browsers and devices, and the pages
# breakdown again with a filter.
#
# It also times the server-rendered dashboard page itself,
# `/example.com?period=30d` (signed in, as a user would open it), which
# makes those calls and more (current visitors, goals) in one request.
#
# Each server's first request, right after it started, is one filtered
# breakdown (timed and printed: what the first filter click costs), then one
# untimed view (the first filtered report loads the site's recent traffic
# into memory; its time is printed).
#
# Before anything is timed, each server that keeps a column store is waited
# for until it has sealed every complete day (the time is printed), and then
# until the recent traffic that a filtered query reaching today starts
# loading is loaded (views over the store read today from it).
#
# Then the same views with each of FILTERS (`;`-separated conditions, one
# set per line; an empty line is the unfiltered view), with the comparison
# to the previous period on, for 30 days, 12 months and a past month (the
# 30 days that end the day before yesterday: every day sealed), and the dashboard
# page with each. Each server's peak anonymous memory (`RssAnon` in
# /proc/PID/status: the heap, not the file cache that maps the database) is
# sampled every 0.2 s through the whole run and printed at the end. The timed
# views then take turns across the sizes, RUNS rounds, so that whatever else
# the machine does at a given moment lands on every size alike and the
# ratio of the largest to the smallest holds. Medians are reported.
#
# With BASELINE_BIN set to another build of tally (say, of the previous
# commit), each size's database is copied once filled and a second server
# runs that build on the copy; the timed views take turns across both, and
# the ratio of this build to the baseline is printed per size: a comparison
# from one run, on the same data, under the same load.
#
# Requirements: python3, a Rust toolchain.
# Usage: bench/dashboard.sh
#   SIZES="100000 1000000 10000000" DAYS=60 RUNS=7 bench/dashboard.sh
#   BASELINE_BIN=/path/to/old/tally SIZES="100000 1000000" bench/dashboard.sh
set -euo pipefail

SIZES=${SIZES:-"100000 1000000 10000000"}
DAYS=${DAYS:-60}
RUNS=${RUNS:-7}
BASELINE_BIN=${BASELINE_BIN:-}
FILTERS=${FILTERS:-"
visit:source==Google
visit:source==Google;visit:browser==Chrome
event:page==/blog**"}

cd "$(dirname "$0")/.."
cargo build --release --bin tally
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
TALLY=$TARGET_DIR/release/tally
WORK=$(mktemp -d -t tally-dash.XXXXXX)
PIDS=()
# Servers are waited for before their files go: one still shutting down
# writes into the directory being removed.
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

SERVERS=()
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
    echo "bench password 1234" |
        "$TALLY" --config "$dir/tally.toml" user add bench@example.com --password-stdin >/dev/null 2>&1
    db_mb=$(python3 -c "import os; print(round(sum(os.path.getsize(os.path.join('$dir/data', f)) for f in os.listdir('$dir/data')) / 1048576, 1))")
    SERVERS+=("$size,$port,$key,$db_mb,tally,$TALLY,$dir")
    if [ -n "$BASELINE_BIN" ]; then
        # Both builds read a fresh copy, written alike, so neither is
        # favoured by where the fill left the database's pages.
        cp -a "$dir/data" "$dir/copy" && rm -rf "$dir/data" && mv "$dir/copy" "$dir/data"
        base=$WORK/$size-baseline
        mkdir -p "$base"
        cp -a "$dir/data" "$base/data"
        bport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        sed -e "s|127.0.0.1:$port|127.0.0.1:$bport|" -e "s|$dir/data|$base/data|" \
            "$dir/tally.toml" >"$base/tally.toml"
        SERVERS+=("$size,$bport,$key,$db_mb,baseline,$BASELINE_BIN,$base")
    fi
done

# Keeps the largest RssAnon (KiB) of process $1 in file $2 while it runs.
sample_anon() {
    local pid=$1 out=$2 max=0 kib
    while kib=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) && [[ -n $kib ]]; do
        ((kib > max)) && max=$kib
        echo "$max" >"$out"
        sleep 0.2
    done
}

for server in "${SERVERS[@]}"; do
    IFS=, read -r size port key db_mb label bin dir <<<"$server"
    "$bin" --config "$dir/tally.toml" serve 2>"$dir/log" &
    pid=$!
    PIDS+=($pid)
    sample_anon "$pid" "$dir/anon" &
    PIDS+=($!)
    until curl -fs "http://127.0.0.1:$port/api/health" >/dev/null 2>&1; do sleep 0.02; done
done

FILTERS="$FILTERS" python3 - "$RUNS" "${SERVERS[@]}" <<'PY'
import http.cookiejar, json, os, re, statistics, sys, time, urllib.error, urllib.parse, urllib.request
runs = int(sys.argv[1])
# In order, each once; the empty line is the unfiltered view.
filter_sets = list(dict.fromkeys(f.strip() for f in os.environ["FILTERS"].split("\n")))
# size, port, key, db MiB, label (tally or baseline); the binary and the
# directory are the shell's.
servers = [s.split(",")[:5] for s in sys.argv[2:]]
labels = sorted({s[4] for s in servers}, reverse=True)  # tally first

# The 30 days that end the day before yesterday (UTC, the demo site's zone).
_day = 86400
_today = int(time.time()) // _day
PAST = "custom&date=" + ",".join(
    time.strftime("%Y-%m-%d", time.gmtime(d * _day)) for d in (_today - 31, _today - 2))

def view(period, filters=None):
    q = f"site_id=example.com&period={period}"
    if filters is not None:
        # The dashboard's calls with the view's filters, comparison on.
        if filters:
            q += "&filters=" + urllib.parse.quote(filters)
        calls = [f"aggregate?{q}&metrics=visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration&compare=previous_period",
                 f"timeseries?{q}&metrics=visitors,pageviews"]
        for prop in ["event:page", "visit:source", "visit:country", "visit:browser", "visit:device"]:
            calls.append(f"breakdown?{q}&property={prop}&limit=10")
        return calls
    calls = [f"aggregate?{q}&metrics=visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration&compare=previous_period",
             f"timeseries?{q}&metrics=visitors,pageviews"]
    for prop in ["event:page", "visit:source", "visit:country", "visit:browser", "visit:device"]:
        calls.append(f"breakdown?{q}&property={prop}&limit=10")
    calls.append(f"breakdown?{q}&property=event:page&limit=10&filters=visit:source==Google")
    return calls

def health(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health") as r:
        return json.load(r)

def run_view(port, key, period, filters=None):
    start = time.perf_counter()
    for call in view(period, filters):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/stats/{call}",
                                     headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req) as r:
            json.load(r)
    return (time.perf_counter() - start) * 1000

# Cold: the first filtered report of a site reads SQLite and starts loading
# the site's recent traffic into memory; the timed runs begin once loaded.
def first_filtered(port, key):
    call = "breakdown?site_id=example.com&period=30d&property=event:page&limit=10&filters=" + \
        urllib.parse.quote("visit:source==Google")
    start = time.perf_counter()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/stats/{call}",
                                 headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req) as r:
        json.load(r)
    return (time.perf_counter() - start) * 1000

def columns_built(port):
    """Waits until the server's column store has sealed every complete day
    (no wait for a build without one). Returns the seconds waited."""
    start = time.perf_counter()
    while True:
        c = health(port).get("columns")
        if not c or c.get("pending_days") == 0:
            return time.perf_counter() - start
        time.sleep(0.2)

for size, port, key, db_mb, label in servers:
    who = "" if len(labels) == 1 else f" ({label})"
    print(f"size {size}{who}: first filtered query after start "
          f"{first_filtered(port, key):.1f} ms")
    cold = run_view(port, key, "30d")
    started = time.perf_counter()
    while health(port)["recent_traffic"]["sites_loading"] > 0:
        time.sleep(0.05)
    who = "" if len(labels) == 1 else f" ({label})"
    print(f"size {size}{who}: first 30d view {cold:.1f} ms, then recent traffic loaded in "
          f"{(time.perf_counter() - started) * 1000:.0f} ms more; database {db_mb} MiB")

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

def signed_in(port):
    """An opener holding a session cookie, signed in through the form."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect)
    page = opener.open(f"http://127.0.0.1:{port}/login").read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrf": csrf, "email": "bench@example.com",
                                   "password": "bench password 1234", "next": "/"}).encode()
    try:
        opener.open(f"http://127.0.0.1:{port}/login", form)
    except urllib.error.HTTPError as e:
        assert e.code == 303, f"sign-in answered {e.code}"
    return opener

def run_page(opener, port, path):
    start = time.perf_counter()
    with opener.open(f"http://127.0.0.1:{port}{path}") as r:
        assert r.status == 200 and b"Unique visitors" in r.read()
    return (time.perf_counter() - start) * 1000

def in_turns(what, measure):
    """Times `measure(port, key)` RUNS times per server, in turns across the
    sizes (and builds; every other round in reverse order), and prints the medians, the ratio of the largest size
    to the smallest, and with a baseline each size's ratio to it."""
    times = {(size, label): [] for size, _, _, _, label in servers}
    for i in range(runs):
        # Every other round backwards, so no server always goes first.
        for size, port, key, _, label in (servers if i % 2 == 0 else servers[::-1]):
            times[(size, label)].append(measure(port, key))
    median = {k: statistics.median(t) for k, t in times.items()}
    for label in labels:
        medians = []
        who = "" if len(labels) == 1 else f" ({label})"
        for size, _, _, _, l in servers:
            if l != label:
                continue
            t = times[(size, label)]
            medians.append((int(size), median[(size, label)]))
            print(f"size {size} {what}{who}: median {statistics.median(t):.1f} ms "
                  f"(min {min(t):.1f}, max {max(t):.1f})")
        medians.sort()
        print(f"{what}{who}: " + ", ".join(f"{s:,} → {m:.1f} ms" for s, m in medians) +
              (f"; ratio largest/smallest {medians[-1][1] / medians[0][1]:.2f}"
               if len(medians) > 1 else ""))
    if len(labels) > 1:
        print(f"{what}: this build / baseline: " + ", ".join(
            f"{int(size):,} → {median[(size, 'tally')] / median[(size, 'baseline')]:.2f}"
            for size, _, _, _, label in servers if label == "tally"))

for size, port, key, db_mb, label in servers:
    if "columns" in health(port):
        print(f"size {size} ({label}): column store built in {columns_built(port):.1f} s more")
    # Once the store holds the past, a filtered range reaching today reads
    # today from recent traffic, which its first such report starts loading:
    # one untimed, then the timed views start warm.
    first_filtered(port, key)
    started = time.perf_counter()
    while health(port)["recent_traffic"]["sites_loading"] > 0:
        time.sleep(0.05)
    print(f"size {size} ({label}): recent traffic loaded "
          f"{(time.perf_counter() - started) * 1000:.0f} ms after the next filtered query")

openers = {port: signed_in(port) for _, port, _, _, _ in servers}
in_turns("page /example.com?period=30d",
         lambda port, key: run_page(openers[port], port, "/example.com?period=30d"))
for period in ["30d", "12mo"]:
    in_turns(f"period {period}", lambda port, key: run_view(port, key, period))
for filters in filter_sets:
    name = filters or "unfiltered"
    for period in ["30d", "12mo", PAST]:
        shown = "past 30 days" if period == PAST else period
        in_turns(f"{name} {shown} with comparison",
                 lambda port, key: run_view(port, key, period, filters))
    path = "/example.com?period=30d" + ("&filters=" + urllib.parse.quote(filters) if filters else "")
    in_turns(f"page, {name}", lambda port, key: run_page(openers[port], port, path))
PY

for server in "${SERVERS[@]}"; do
    IFS=, read -r size port key db_mb label bin dir <<<"$server"
    who=""
    [ -n "$BASELINE_BIN" ] && who=" ($label)"
    echo "size $size$who: peak anonymous memory (RssAnon) $(( $(cat "$dir/anon" 2>/dev/null || echo 0) / 1024 )) MiB"
done
