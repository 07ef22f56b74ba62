#!/usr/bin/env python3
"""summarize.py results/SIZE.log: medians over the runs of each configuration."""
import json, statistics as st, sys, collections
builds = collections.defaultdict(list); queries = collections.defaultdict(list)
for line in open(sys.argv[1]):
    if line.startswith("BUILD "):
        b = json.loads(line[6:]); builds[b["layout"]].append(b)
    elif line.startswith("QUERY "):
        q = json.loads(line[6:])
        key = (q["layout"], "approx" if q["approx"] else "exact", q["memory_limit"] or "default")
        queries[key].append(q)
med = st.median
for lay, bs in builds.items():
    print(f"build {lay}: n={len(bs)} events={bs[0]['events']} secs={med(b['secs'] for b in bs):.1f} "
          f"rate={med(b['events_per_sec'] for b in bs):,.0f} ev/s (sqlite read {med(b['sqlite_read_secs'] for b in bs):.1f}s) "
          f"bytes={bs[-1]['bytes']:,} B/ev={bs[-1]['bytes_per_event']:.1f} peakRSS={med(b['peak_rss_kb'] for b in bs)/1024:.0f}MiB")
for key, qs in queries.items():
    print(f"\nquery {key}: n={len(qs)} mismatches={[q['mismatches'] for q in qs]} checked={qs[0]['checked']} "
          f"max_visitor_err={max(q['max_visitor_err'] for q in qs):.4f}")
    print(f"  open {med(q['open_ms'] for q in qs):.1f} ms, first call {med(q['first_call_ms'] for q in qs):.0f} ms, "
          f"first view {med(q['first_view_ms'] for q in qs):.0f} ms, peak RssAnon {med(q['peak_rss_anon_kb'] for q in qs)/1024:.0f} MiB "
          f"(max {max(q['peak_rss_anon_kb'] for q in qs)/1024:.0f}), VmHWM {med(q['vm_hwm_kb'] for q in qs)/1024:.0f} MiB")
    for i, v in enumerate(qs[0]["views"]):
        vm = med(q["views"][i]["view_ms"] for q in qs)
        calls = {c: med(q["views"][i]["calls"][c] for q in qs) for c in v["calls"]}
        worst = max(calls, key=calls.get)
        print(f"  {v['view']:8} view {vm:7.1f} ms  worst call {worst} {calls[worst]:.1f} ms  | " +
              " ".join(f"{c.replace('breakdown-','')}={t:.1f}" for c, t in calls.items()))
