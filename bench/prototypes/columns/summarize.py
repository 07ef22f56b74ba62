"""Medians of the three build and query runs in results/ (see bench.sh)."""
import json, statistics, sys

def summary(path):
    for line in open(path):
        if line.startswith("SUMMARY "):
            return json.loads(line[8:])

med = statistics.median
for size in sys.argv[1:] or ["1000000", "10000000"]:
    b = [summary(f"results/build-{size}-{i}.log") for i in (1, 2, 3)]
    q = [summary(f"results/query-{size}-{i}.log") for i in (1, 2, 3)]
    print(f"== {size} events")
    print(f"build {med(x['events_per_s'] for x in b):,.0f} events/s, {med(x['seconds'] for x in b):.1f} s; "
          f"disk {b[0]['bytes']:,} B = {b[0]['bytes_per_event']:.1f} B/event; "
          f"seal one day median {med(x['day_seal_median_s'] for x in b):.3f} s, max {med(x['day_seal_max_s'] for x in b):.3f} s; "
          f"build VmHWM {med(x['vmhwm_kib'] for x in b)/1024:.0f} MiB")
    print(f"first view ({q[0]['first_view']}): first answer {med(x['first_answer_ms'] for x in q):.1f} ms, "
          f"whole view {med(x['first_view_ms'] for x in q):.1f} ms after process start")
    for v in ["30d-f0", "30d-f1", "30d-f2", "12mo-f0", "12mo-f1", "12mo-f2"]:
        view = med(x[v]["view_ms"] for x in q)
        cpu = med(x[v]["view_cpu_ms"] for x in q)
        calls = [med(x[v]["calls_ms"][c] for x in q) for c in range(7)]
        heap = max(x[v]["heap_peak_bytes"] for x in q) / 2**20
        alloc = med(x[v]["heap_allocated_bytes"] for x in q) / 2**20
        print(f"{v:8} view {view:6.1f} ms (cpu {cpu:6.1f}); calls " + " ".join(f"{c:5.1f}" for c in calls)
              + f"; worst {max(calls):5.1f}; heap peak {heap:.1f} MiB, allocated {alloc:.1f} MiB")
    print(f"peak RssAnon {max(x['peak_rss_anon_kib'] for x in q)/1024:.1f} MiB; "
          f"mismatches {sum(x['mismatches'] for x in q)}")
