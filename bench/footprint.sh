#!/usr/bin/env bash
# Footprint benchmark: binary size and idle resident memory of the release
# build (LTO, one codegen unit, stripped: Cargo.toml's [profile.release])
# against a baseline built in the same run with Cargo's default release
# settings (no LTO, 16 codegen units, symbols kept).
#
# Idle RSS: a server on a fresh data directory with one site, measured 5 s
# after /api/health first answers (VmRSS from /proc). The two builds take
# turns, RUNS rounds; medians are reported with their ratio.
#
# Requirements: Linux, python3, curl, a Rust toolchain.
# Usage: bench/footprint.sh        RUNS=5 bench/footprint.sh
set -euo pipefail

RUNS=${RUNS:-3}
cd "$(dirname "$0")/.."
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cargo build --release --bin tally
cargo build --release --bin tally --target-dir "$TARGET_DIR/footprint-baseline" \
    --config 'profile.release.lto=false' --config 'profile.release.codegen-units=16' \
    --config 'profile.release.strip=false'
RELEASE=$TARGET_DIR/release/tally
BASELINE=$TARGET_DIR/footprint-baseline/release/tally
WORK=$(mktemp -d -t tally-footprint.XXXXXX)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

idle_rss_kib() {
    local bin=$1 dir=$WORK/run port
    rm -rf "$dir" && mkdir -p "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf '[server]\nlisten = "127.0.0.1:%s"\n[storage]\ndata_dir = "%s/data"\n' "$port" "$dir" > "$dir/tally.toml"
    "$bin" --config "$dir/tally.toml" site add example.com >/dev/null
    TALLY_LOG=warn "$bin" --config "$dir/tally.toml" serve 2>/dev/null &
    PID=$!
    until curl -sf "http://127.0.0.1:$port/api/health" >/dev/null; do sleep 0.05; done
    sleep 5
    awk '/^VmRSS/ {print $2}' "/proc/$PID/status"
    kill "$PID" && wait "$PID" 2>/dev/null || true
    PID=
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

release_rss=() baseline_rss=()
for _ in $(seq "$RUNS"); do
    release_rss+=("$(idle_rss_kib "$RELEASE")")
    baseline_rss+=("$(idle_rss_kib "$BASELINE")")
done
size_r=$(stat -c %s "$RELEASE")
size_b=$(stat -c %s "$BASELINE")
rss_r=$(printf '%s\n' "${release_rss[@]}" | median)
rss_b=$(printf '%s\n' "${baseline_rss[@]}" | median)
echo "idle RSS runs (KiB): release ${release_rss[*]}; baseline ${baseline_rss[*]}"
python3 - "$size_r" "$size_b" "$rss_r" "$rss_b" <<'PY'
import sys
size_r, size_b, rss_r, rss_b = map(float, sys.argv[1:])
print(f"binary size: release {size_r/2**20:.1f} MiB, baseline {size_b/2**20:.1f} MiB, ratio {size_r/size_b:.2f}")
print(f"idle RSS (median): release {rss_r/1024:.1f} MiB, baseline {rss_b/1024:.1f} MiB, ratio {rss_r/rss_b:.2f}")
PY
