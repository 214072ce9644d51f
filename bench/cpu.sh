#!/usr/bin/env bash
# CPU time per proxied request: Proxima's forward proxy against nginx as a reverse proxy, same
# origin, same core. Requests per second on this (virtual, shared) machine move with steal time
# and neighbours; the CPU a process burns per request barely does, so this is the number to
# compare optimisations with. The peer benchmark (bench/run.sh) stays the reference for req/s.
#
#   bash bench/cpu.sh            (env: ROUNDS=3 DUR=5s CONNS=64 OBJ=1k LOG=1|0 access log on/off
#                                 MODE=fwd|rev: Proxima as a forward proxy or a reverse one)
#
# Alternates nginx-rev and Proxima ROUNDS times; for each, µs of user+system CPU per request of
# the proxy process alone (origin excluded), and the Proxima/nginx ratio of that round.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. "$ROOT/bench/lib.sh"   # ticks, wait_ports
CONF=${CONF:-$ROOT/../shared/bench/peers-conf}
SCRATCH=${SCRATCH:-$ROOT/.build-release}
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5s}; CONNS=${CONNS:-64}; OBJ=${OBJ:-1k}
for t in nginx wrk taskset ss; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done

# BIN=path measures another build (an older commit's, for a before/after comparison).
if [ -z "${BIN:-}" ]; then
  swift build -c release --scratch-path "$SCRATCH" --product proxima \
    -Xswiftc -enforce-exclusivity=unchecked --static-swift-stdlib >/dev/null
  BIN="$SCRATCH/release/proxima"
fi

WORK=$(mktemp -d -t proxima-cpu.XXXXXX)
mkdir -p "$WORK"/{conf,run/origin-tmp,run/nginx-rev-tmp,www}
for f in origin-nginx.conf nginx-rev.conf origin.crt origin.key; do
  sed "s|@WORK@|$WORK|g" "$CONF/$f" >"$WORK/conf/$f"
done
head -c 1024 /dev/urandom | base64 -w 0 | head -c 1024 >"$WORK/www/1k"
head -c 102400 /dev/urandom | base64 -w 0 | head -c 102400 >"$WORK/www/100k"
chmod -R a+rX "$WORK"   # nginx workers run as another user when started by root
MODE=${MODE:-fwd}
if [ "$MODE" = rev ]; then
  cat >"$WORK/conf/proxima.yaml" <<YAML
listeners:
  - name: bench
    role: reverse
    address: 127.0.0.1:13190
upstreams:
  - name: origin
    servers: [{address: 127.0.0.1:18080}]
routes:
  - {name: all, upstream: origin}
logging:
  level: warning
YAML
else
  cat >"$WORK/conf/proxima.yaml" <<YAML
listeners:
  - name: bench
    role: forward
    address: 127.0.0.1:13190
logging:
  level: warning
YAML
fi
if [ "${LOG:-1}" = 0 ]; then
  echo "  access: []" >>"$WORK/conf/proxima.yaml"
else
  cat >>"$WORK/conf/proxima.yaml" <<YAML
  access:
    - sink: file
      path: $WORK/run/proxima-access.log
      format: squid
YAML
fi
cat >"$WORK/conf/fwd.lua" <<LUA
wrk.path = "http://127.0.0.1:18080/$OBJ"
wrk.headers["Host"] = "127.0.0.1:18080"
LUA

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
for port in 18080 18081 13190; do
  if ss -Hltn "sport = :$port" | grep -q .; then echo "port $port in use"; exit 1; fi
done
taskset -c 0 nginx -e "$WORK/run/origin-error.log" -c "$WORK/conf/origin-nginx.conf" & PIDS+=($!)
taskset -c 0 nginx -e "$WORK/run/nginx-rev-error.log" -c "$WORK/conf/nginx-rev.conf" & NGINX=$!; PIDS+=($NGINX)
taskset -c 0 "$BIN" serve --config "$WORK/conf/proxima.yaml" & PROXIMA=$!; PIDS+=($PROXIMA)
wait_ports 18080 18081 13190

HZ=$(getconf CLK_TCK)
measure() { # measure PID ARGS... -> "requests cpu_us_per_request"
  local pid=$1; shift
  taskset -c 1 wrk -t1 -c"$CONNS" -d1s "$@" >/dev/null 2>&1
  local before out after reqs
  before=$(ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DUR" "$@" 2>&1)
  after=$(ticks "$pid")
  reqs=$(awk '/requests in/{print $1}' <<<"$out")
  awk -v r="$reqs" -v t=$((after - before)) -v hz="$HZ" 'BEGIN{printf "%d %.1f\n", r, t * 1e6 / hz / r}'
}
if [ "$MODE" = rev ]; then
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:13190/$OBJ")
else
  code=$(curl -s -o /dev/null -w '%{http_code}' -x http://127.0.0.1:13190 "http://127.0.0.1:18080/$OBJ")
fi
[ "$code" = 200 ] || { echo "verification through Proxima gave $code, not 200"; exit 1; }
printf '%-6s %12s %10s %12s %10s %8s\n' round nginx-reqs "nginx µs" proxima-reqs "proxima µs" ratio
for round in $(seq 1 "$ROUNDS"); do
  read -r nreq nus < <(measure "$NGINX" "http://127.0.0.1:18081/$OBJ")
  if [ "$MODE" = rev ]; then
    read -r preq pus < <(measure "$PROXIMA" "http://127.0.0.1:13190/$OBJ")
  else
    read -r preq pus < <(measure "$PROXIMA" -s "$WORK/conf/fwd.lua" http://127.0.0.1:13190/)
  fi
  printf '%-6s %12s %10s %12s %10s %8s\n' "$round" "$nreq" "$nus" "$preq" "$pus" \
    "$(awk -v a="$pus" -v b="$nus" 'BEGIN{printf "%.2f", a / b}')"
done
echo "(ratio = Proxima CPU per request / nginx CPU per request; below 1 means Proxima spends less)"
