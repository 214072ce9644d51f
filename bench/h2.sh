#!/usr/bin/env bash
# HTTP/2 (h2c, prior knowledge) reverse-proxy comparison with h2load: nginx (the shared
# nginx-rev config's http2 listener, 18091), HAProxy (the shared config's `proto h2` bind,
# 18092) and Proxima (bench/reverse.yaml, 13182: reverse listeners speak h2c by default), all in
# front of the same nginx origin. Servers on CPU 0, h2load on CPU 1, loopback only.
#
#   bash bench/h2.sh            env: RUNS=2 DUR=10 CONNS=64 STREAMS=10 OBJ=1k
#                               INSTALL=1 apt-gets nghttp2-client (h2load), nginx and haproxy
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. "$ROOT/bench/lib.sh"   # wait_ports
SHARED=${SHARED:-$ROOT/../shared/bench}
SCRATCH=${SCRATCH:-$ROOT/.build-release}
RUNS=${RUNS:-2}; DUR=${DUR:-10}; CONNS=${CONNS:-64}; STREAMS=${STREAMS:-10}; OBJ=${OBJ:-1k}

for t in h2load nginx haproxy taskset ss curl; do
  if ! command -v $t >/dev/null; then
    if [ "${INSTALL:-0}" = 1 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client nginx haproxy curl iproute2 >/dev/null
      break
    fi
    echo "missing $t (INSTALL=1 to apt-get it)"; exit 1
  fi
done

swift build -c release --scratch-path "$SCRATCH" --product proxima -Xswiftc -enforce-exclusivity=unchecked --static-swift-stdlib || exit 1
BIN="$SCRATCH/release/proxima"

WORK=$(mktemp -d -t proxima-h2.XXXXXX)
C=$WORK/conf; R=$WORK/run
mkdir -p "$C" "$R"/{origin-tmp,nginx-rev-tmp} "$WORK/www" "$WORK/results"
for f in "$SHARED"/peers-conf/*; do sed "s|@WORK@|$WORK|g" "$f" >"$C/$(basename "$f")"; done
head -c 1024 /dev/urandom | base64 -w 0 | head -c 1024 >"$WORK/www/1k"
head -c 102400 /dev/urandom | base64 -w 0 | head -c 102400 >"$WORK/www/100k"
chmod -R a+rX "$WORK"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT
start() { local name=$1; shift; taskset -c 0 "$@" >"$R/$name.out" 2>&1 & PIDS+=($!); }

start origin nginx -e "$R/origin-error.log" -c "$C/origin-nginx.conf"
start nginx-rev nginx -e "$R/nginx-rev-error.log" -c "$C/nginx-rev.conf"
start haproxy haproxy -db -f "$C/haproxy.cfg"
start proxima "$BIN" serve --config "$ROOT/bench/reverse.yaml"
wait_ports 18080 18091 18092 13182

ROWS="nginx-h2c 18091
haproxy-h2c 18092
proxima-h2c 13182"
echo "== verify (curl --http2-prior-knowledge /$OBJ)"
while read -r name port; do
  printf '  %-12s %s\n' "$name" "$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code} %{http_version} %{size_download}' http://127.0.0.1:$port/$OBJ)"
done <<<"$ROWS"

declare -A RPS MEAN
for run in $(seq 1 "$RUNS"); do
  echo "== run $run: h2load -c$CONNS -m$STREAMS -D$DUR (warm-up 2 s), /$OBJ"
  while read -r name port; do
    f=$WORK/results/run$run-$name.txt
    taskset -c 1 h2load -c"$CONNS" -m"$STREAMS" -D"$DUR" --warm-up-time=2 "http://127.0.0.1:$port/$OBJ" >"$f" 2>&1
    rps=$(awk '/^finished in/{gsub(",","",$4); printf "%.0f",$4}' "$f")
    mean=$(awk '/^time for request:/{print $6}' "$f")
    fail=$(awk '/^requests:/{for(i=1;i<=NF;i++) if($(i+1)=="failed,") print $i}' "$f")
    s2xx=$(awk '/^status codes:/{print $3}' "$f")
    RPS[$run,$name]=${rps:-0}; MEAN[$run,$name]=${mean:--}
    printf '  %-12s %8s req/s  mean %8s  failed %s  2xx %s\n' "$name" "${rps:-?}" "${mean:-?}" "${fail:-?}" "${s2xx:-?}"
    sleep 1
  done <<<"$ROWS"
done

echo
echo "h2load -c$CONNS -m$STREAMS -D$DUR, /$OBJ, servers on CPU0, h2load on CPU1"
for run in $(seq 1 "$RUNS"); do
  p=${RPS[$run,proxima-h2c]}; n=${RPS[$run,nginx-h2c]}; h=${RPS[$run,haproxy-h2c]}
  awk -v r="$run" -v p="$p" -v n="$n" -v h="$h" -v pm="${MEAN[$run,proxima-h2c]}" -v nm="${MEAN[$run,nginx-h2c]}" -v hm="${MEAN[$run,haproxy-h2c]}" \
    'BEGIN{ printf "run %s: proxima %s req/s (mean %s), nginx %s (%s), haproxy %s (%s): %.2fx nginx, %.2fx haproxy\n", r, p, pm, n, nm, h, hm, (n>0?p/n:0), (h>0?p/h:0) }'
done
echo "results in $WORK/results/"
