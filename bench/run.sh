#!/usr/bin/env bash
# Builds Proxima for release and runs the shared peer benchmark with Proxima as extra rows:
# proxima-fwd (forward, access log to a file, Squid format), proxima-nolog (forward, no log, as
# nginx-rev runs), proxima-rev (reverse proxy in front of the same origin, no log), and the
# caching rows proxima-cache (reverse, against varnish-cache) and proxima-fwdcache (forward,
# against squid-memcache). Usage: bash bench/run.sh   (env as for peers.sh: RUNS, DUR, CONNS, OBJ, ONLY,
# INSTALL=1 to apt-get the peers). Results: the table peers.sh prints, ratios by bench/ratios.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PEERS=${PEERS:-$ROOT/../shared/bench/peers.sh}
SCRATCH=${SCRATCH:-$ROOT/.build-release}

swift build -c release --scratch-path "$SCRATCH" --product proxima \
  -Xswiftc -enforce-exclusivity=unchecked --static-swift-stdlib
BIN="$SCRATCH/release/proxima"

ROWS=$(mktemp -t proxima-rows.XXXXXX)
trap 'rm -f "$ROWS"' EXIT
# Access log on (file, Squid format) as in production; CONNECT to the TLS origin allowed.
cat >"$ROWS" <<ROWS
proxima-fwd fwd 13180 $BIN serve --config $ROOT/bench/forward.yaml
proxima-nolog fwd 13181 $BIN serve --config $ROOT/bench/forward-nolog.yaml
proxima-rev rev 13182 $BIN serve --config $ROOT/bench/reverse.yaml
proxima-cache rev 13183 $BIN serve --config $ROOT/bench/cache.yaml
proxima-fwdcache fwd 13184 $BIN serve --config $ROOT/bench/forward-cache.yaml
proxima-diskcache rev 13185 $BIN serve --config $ROOT/bench/disk-cache.yaml
ROWS
rm -rf /tmp/proxima-bench-disk
WORK=${WORK:-$(mktemp -d -t proxybench.XXXXXX)}
export WORK
sed "s|@WORK@|$WORK|g" "$ROOT/bench/forward.yaml.in" >"$ROOT/bench/forward.yaml"
cp "$ROOT/bench/forward-nolog.yaml.in" "$ROOT/bench/forward-nolog.yaml"
bash "$PEERS" --extra "$ROWS"
bash "$ROOT/bench/ratios.sh" "$WORK/results/table-${OBJ:-1k}.txt"
