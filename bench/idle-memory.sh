#!/usr/bin/env bash
# Resident memory that 1,000 idle keep-alive client connections add to the release binary.
# Usage: bash bench/idle-memory.sh [COUNT]   (builds release first if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SCRATCH=${SCRATCH:-$ROOT/.build-release}
COUNT=${1:-1000}
swift build -c release --scratch-path "$SCRATCH" --product proxima \
  -Xswiftc -enforce-exclusivity=unchecked --static-swift-stdlib >/dev/null
CONF=$(mktemp -t proxima-idle.XXXXXX.yaml)
ERR=$(mktemp -t proxima-idle.XXXXXX.err)
printf 'listeners:\n  - role: forward\n    address: 127.0.0.1:0\nlogging:\n  access: []\n' >"$CONF"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$SCRATCH/release/proxima" serve --config "$CONF" 2>"$ERR" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -f "$CONF" "$ERR"' EXIT
for _ in $(seq 1 100); do grep -q 'listening' "$ERR" && break; sleep 0.1; done
PORT=$(grep -o '127.0.0.1:[0-9]*' "$ERR" | head -1 | cut -d: -f2)
python3 - "$PID" "$PORT" "$COUNT" <<'PY'
import socket, sys, time
pid, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])
def ask(c):
    # Answered by the proxy itself (502, nothing listens on port 1); the connection stays open.
    c.sendall(b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n")
    c.recv(65536)
warm = socket.create_connection(("127.0.0.1", port)); ask(warm)
time.sleep(0.3)
base = rss()
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
ask(conns[-1])
time.sleep(0.5)
after = rss()
print(f"{count} idle connections: RSS {base} KiB -> {after} KiB, +{after - base} KiB ({(after - base) * 1024 // count} bytes each)")
PY
