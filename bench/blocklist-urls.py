#!/usr/bin/env python3
"""Writes a deterministic, realistic-looking mix of request URLs for the block-list benchmark:
page loads and sub-resources of ordinary sites, and requests to hosts that the lists name
(ads, trackers) and to their subdomains. One 'URL SOURCE TYPE' a line."""
import random, re, sys

lists, out, n = sys.argv[1:-2], sys.argv[-2], int(sys.argv[-1])
rng = random.Random(20261127)
listed = []
for path in lists:
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^\|\|([a-z0-9.-]+)\^\s*$", line)
        if m:
            listed.append(m.group(1))
sites = [f"{w}{i}.{tld}" for i in range(400) for w, tld in [("news", "com"), ("shop", "de"), ("blog", "org")]]
paths = ["/", "/index.html", "/static/app.js", "/img/logo.png", "/css/site.css", "/api/v1/items?page=2", "/article/2024/11/story",
         # what ad and tracking requests on ordinary sites look like
         "/ads/banner728.gif", "/pagead/js/adsbygoogle.js", "/track/pixel.gif?uid=42", "/js/analytics.js",
         "/wp-content/plugins/ad-inserter/js/front.js", "/beacon?ev=view", "/static/js/prebid.js"]
types = {".js": "script", ".png": "image", ".gif": "image", ".css": "stylesheet", "/": "document"}
with open(out, "w") as f:
    for _ in range(n):
        page = rng.choice(sites)
        r = rng.random()
        if r < 0.25 and listed:
            host = rng.choice(listed)
            host = (rng.choice(["cdn.", "static.", "px.", ""]) + host)
        elif r < 0.35:
            host = rng.choice(["www.google-analytics.com", "connect.facebook.net", "cdn.jsdelivr.net", "fonts.gstatic.com"])
        else:
            host = rng.choice(["www.", "cdn.", "img.", ""]) + page
        p = rng.choice(paths)
        kind = next((t for suffix, t in types.items() if p.endswith(suffix)), "xmlhttprequest")
        if kind == "document":
            # A page load: its own source, as a browser reports it.
            f.write(f"https://{host}{p} https://{host}{p} {kind}\n")
        else:
            f.write(f"https://{host}{p} https://www.{page}/ {kind}\n")
