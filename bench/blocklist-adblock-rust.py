#!/usr/bin/env python3
"""Brave's adblock-rust (PyPI package 'adblock') on the same URLs: load time, memory and time
per check, printed as one JSON line like proxima-filter-bench's."""
import json, resource, sys, time
import adblock

urls_file, lists = sys.argv[1], sys.argv[2:]
reqs = [line.split() for line in open(urls_file) if line.strip()]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
fs = adblock.FilterSet()
for path in lists:
    fs.add_filter_list(open(path, encoding="utf-8", errors="replace").read())
engine = adblock.Engine(filter_set=fs, optimize=True)
load_ms = (time.perf_counter() - t0) * 1000
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times, blocked = [], 0
clock = time.perf_counter_ns
for _ in range(3):
    blocked = 0
    for url, source, kind in reqs:
        s = clock()
        hit = engine.check_network_urls(url, source, kind).matched
        times.append(clock() - s)
        blocked += hit
import os
if os.environ.get("DECISIONS"):
    with open(os.environ["DECISIONS"], "w") as f:
        for url, source, kind in reqs:
            r = engine.check_network_urls(url, source, kind)
            f.write(f"{int(r.matched)} {url} {r.filter or '-'}\n")
times.sort()
print(json.dumps({"engine": "adblock-rust", "urls": len(reqs), "blocked": blocked, "load_ms": load_ms,
                  "memory_mib": (rss1 - rss0) / 1024, "median_us": times[len(times) // 2] / 1000,
                  "p99_us": times[len(times) * 99 // 100] / 1000}))
