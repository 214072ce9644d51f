#!/usr/bin/env bash
# Compression on the fly: Proxima (reverse, gzip level 6 / Brotli 5) against nginx as a reverse
# proxy with `gzip on; gzip_comp_level 6`, both in front of the same nginx origin serving a text
# file (the README of this repository repeated to about 1 MiB, and a 64 KiB one). For each:
# the compressed size, and the proxy process's CPU time per MiB of text compressed (user +
# system from /proc, requests sent one connection at a time by curl so that nothing else is
# measured). Servers on CPU 0, the client on CPU 1, loopback only.
#
#   bash bench/compress.sh        env: REQUESTS=200
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. "$ROOT/bench/lib.sh"   # ticks, wait_ports
SHARED=${SHARED:-$ROOT/../shared/bench}
SCRATCH=${SCRATCH:-$ROOT/.build-release}
REQUESTS=${REQUESTS:-200}
for t in nginx curl taskset ss; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done

swift build -c release --scratch-path "$SCRATCH" --product proxima -Xswiftc -enforce-exclusivity=unchecked --static-swift-stdlib >/dev/null
BIN="$SCRATCH/release/proxima"

WORK=$(mktemp -d -t proxima-compress.XXXXXX)
mkdir -p "$WORK"/{conf,run/origin-tmp,run/gz-tmp,www}
sed "s|@WORK@|$WORK|g" "$SHARED/peers-conf/origin-nginx.conf" >"$WORK/conf/origin-nginx.conf"
for f in origin.crt origin.key; do cp "$SHARED/peers-conf/$f" "$WORK/conf/"; done
while [ "$(stat -c %s "$WORK/www/big.txt" 2>/dev/null || echo 0)" -lt 1048576 ]; do cat README.md >>"$WORK/www/big.txt"; done
head -c 65536 "$WORK/www/big.txt" >"$WORK/www/small.txt"
chmod -R a+rX "$WORK"
cat >"$WORK/conf/nginx-gzip.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/run/nginx-gzip.pid;
error_log $WORK/run/nginx-gzip-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/run/gz-tmp/body;
    proxy_temp_path $WORK/run/gz-tmp/proxy;
    fastcgi_temp_path $WORK/run/gz-tmp/fastcgi;
    uwsgi_temp_path $WORK/run/gz-tmp/uwsgi;
    scgi_temp_path $WORK/run/gz-tmp/scgi;
    gzip on;
    gzip_comp_level 6;
    gzip_min_length 1024;
    gzip_proxied any;
    gzip_types text/plain;
    upstream origin { server 127.0.0.1:18080; keepalive 16; }
    server {
        listen 127.0.0.1:18095;
        location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
cat >"$WORK/conf/proxima.yaml" <<YAML
listeners:
  - {name: bench, role: reverse, address: 127.0.0.1:18096}
upstreams:
  - name: origin
    servers: [{address: 127.0.0.1:18080}]
routes:
  - {name: all, upstream: origin}
compression: {enabled: true, gzip_level: 6, brotli_level: 5}
logging: {level: warning, access: []}
YAML
# .txt files are served as text/plain by the origin's mime types.
sed -i 's|default_type application/octet-stream;|default_type application/octet-stream; types { text/plain txt; }|' "$WORK/conf/origin-nginx.conf"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
taskset -c 0 nginx -e "$WORK/run/origin-error.log" -c "$WORK/conf/origin-nginx.conf" & PIDS+=($!)
taskset -c 0 nginx -e "$WORK/run/nginx-gzip-error.log" -c "$WORK/conf/nginx-gzip.conf" & NGINX=$!; PIDS+=($NGINX)
taskset -c 0 "$BIN" serve --config "$WORK/conf/proxima.yaml" & PROXIMA=$!; PIDS+=($PROXIMA)
wait_ports 18080 18095 18096

HZ=$(getconf CLK_TCK)
measure() { # measure NAME PID PORT FILE CODING -> row
  local name=$1 pid=$2 port=$3 file=$4 coding=$5
  local size input before after
  size=$(taskset -c 1 curl -s -o /dev/null -w '%{size_download}' -H "Accept-Encoding: $coding" "http://127.0.0.1:$port/$file")
  input=$(stat -c %s "$WORK/www/$file")
  before=$(ticks "$pid")
  for _ in $(seq 1 "$REQUESTS"); do taskset -c 1 curl -s -o /dev/null -H "Accept-Encoding: $coding" "http://127.0.0.1:$port/$file"; done
  after=$(ticks "$pid")
  awk -v n="$name" -v f="$file" -v c="$coding" -v s="$size" -v i="$input" -v t=$((after - before)) -v hz="$HZ" -v r="$REQUESTS" \
    'BEGIN{ printf "%-14s %-10s %-5s %9d %9d %6.1f%% %10.1f\n", n, f, c, i, s, 100*s/i, (t/hz)*1e3 / (r*i/1048576) }'
}
printf '%-14s %-10s %-5s %9s %9s %7s %10s\n' proxy file coding in-bytes out-bytes ratio "ms/MiB"
for file in big.txt small.txt; do
  measure nginx-gzip "$NGINX" 18095 "$file" gzip
  measure proxima "$PROXIMA" 18096 "$file" gzip
  measure proxima "$PROXIMA" 18096 "$file" br
done
echo "(ms/MiB: CPU of the proxy process per MiB of text compressed; lower is better)"
