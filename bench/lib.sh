# Shared by the benchmark scripts (sourced, not run).

# Waits up to $3 seconds (default 10) for "listening on http://ADDR" in log
# $1 of process $2, looking every 20 ms (so a script can time a start by
# it); prints ADDR. Fails, printing the log, if the process ends first or
# the time runs out.
wait_listening() {
    local log=$1 pid=$2 seconds=${3:-10} addr=""
    for _ in $(seq $((seconds * 50))); do
        addr=$(grep -o 'listening on http://[0-9.:]*' "$log" 2>/dev/null | head -n1 | sed 's|.*http://||' || true)
        if [[ -n $addr ]]; then
            echo "$addr"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.02
    done
    echo "$(basename "$0"): server did not start; log:" >&2
    cat "$log" >&2
    return 1
}
