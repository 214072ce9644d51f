#!/usr/bin/env bash
# Prints each row's requests per second as a ratio of nginx-rev and squid-nocache, from a table
# written by peers.sh (first run column).
set -euo pipefail
TABLE=$1
awk -F'|' '
  NF < 2 { next }
  { split($1, a, " "); split($2, b, " "); if (b[1] !~ /^[0-9]+$/) next
    name = a[1]; rps[name] = b[1]; p99[name] = b[3]; order[++n] = name }
  END {
    printf "%-15s %9s %8s %10s %14s\n", "name", "req/s", "p99 ms", "x nginx-rev", "x squid-nocache"
    for (i = 1; i <= n; i++) {
      nm = order[i]
      rn = (rps["nginx-rev"] > 0) ? rps[nm] / rps["nginx-rev"] : 0
      rs = (rps["squid-nocache"] > 0) ? rps[nm] / rps["squid-nocache"] : 0
      printf "%-15s %9s %8s %10.2f %14.2f\n", nm, rps[nm], p99[nm], rn, rs
    }
  }' "$TABLE"
