#!/usr/bin/env bash
# Block-list matching, Proxima against Brave's adblock-rust (the PyPI package `adblock`), on one
# core, with EasyList + EasyPrivacy from Debian's webext-ublock-origin-chromium and the same
# generated URL mix for both. A benchmark, not a test:
#
#   bash bench/blocklist.sh        (env: URLS=20000; INSTALL=1 to pip-install adblock)
#
# Both engines apply every network rule of the lists. adblock-rust also pays for a Python call
# per check (measured around the call, so that cost is inside its numbers). The script also
# compares the two engines' decisions URL by URL and prints where they differ.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SCRATCH=${SCRATCH:-$ROOT/.build-release}
LISTS=/usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist
[ -f "$LISTS/easylist.txt" ] || { echo "missing $LISTS (apt-get install webext-ublock-origin-chromium)"; exit 1; }
if ! python3 -c "import adblock" 2>/dev/null; then
  if [ "${INSTALL:-0}" = 1 ]; then pip install -q adblock; else echo "python module adblock missing (INSTALL=1 to pip-install it)"; exit 1; fi
fi
swift build -c release --scratch-path "$SCRATCH" --product proxima-filter-bench -Xswiftc -enforce-exclusivity=unchecked >/dev/null
WORK=$(mktemp -d -t proxima-filter.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
python3 bench/blocklist-urls.py "$LISTS/easylist.txt" "$LISTS/easyprivacy.txt" "$WORK/urls.txt" "${URLS:-20000}"
P=$(DECISIONS=$WORK/proxima.txt taskset -c 0 "$SCRATCH/release/proxima-filter-bench" "$WORK/urls.txt" "$LISTS/easylist.txt" "$LISTS/easyprivacy.txt")
A=$(DECISIONS=$WORK/adblock.txt taskset -c 0 python3 bench/blocklist-adblock-rust.py "$WORK/urls.txt" "$LISTS/easylist.txt" "$LISTS/easyprivacy.txt")
echo "$P"
echo "$A"
python3 - "$P" "$A" <<'PY'
import json, sys
p, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'engine':14} {'load ms':>9} {'MiB':>7} {'median µs':>10} {'p99 µs':>8} {'blocked':>8}")
for r in (p, a):
    print(f"{r['engine']:14} {r['load_ms']:9.0f} {r['memory_mib']:7.1f} {r['median_us']:10.3f} {r['p99_us']:8.3f} {r['blocked']:8}")
print(f"median time per check, proxima / adblock-rust: {p['median_us'] / a['median_us']:.2f}")
PY
python3 - "$WORK/proxima.txt" "$WORK/adblock.txt" <<'PY'
import collections, os, sys
p = [l.split(" ", 2) for l in open(sys.argv[1]).read().splitlines()]
a = [l.split(" ", 2) for l in open(sys.argv[2]).read().splitlines()]
differ = [(x, y) for x, y in zip(p, a) if x[0] != y[0]]
print(f"decisions that agree: {len(p) - len(differ)} of {len(p)}")
seen = collections.Counter()
for x, y in differ:
    seen[(x[0], x[2] if x[0] == "1" else y[2])] += 1
for (who, rule), n in seen.most_common(int(os.environ.get("SHOW", "12"))):
    print(f"  {n:6} {'only proxima blocks' if who == '1' else 'only adblock-rust blocks'}: {rule}")
PY
