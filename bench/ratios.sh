#!/usr/bin/env bash
# Prints, for every run column of a table written by peers.sh, each row's requests per second
# as a ratio of nginx-rev and of squid-nocache measured in that same run.
set -euo pipefail
TABLE=$1
awk -F'|' '
  NF < 2 { next }
  {
    split($1, a, " "); name = a[1]
    split($2, t, " "); if (t[1] !~ /^[0-9]+$/) next
    order[++n] = name
    for (r = 2; r <= NF; r++) { split($r, b, " "); rps[r - 1, name] = b[1]; p99[r - 1, name] = b[3] }
    runs = NF - 1
  }
  END {
    for (r = 1; r <= runs; r++) {
      printf "run %d\n%-15s %9s %8s %11s %16s\n", r, "name", "req/s", "p99 ms", "x nginx-rev", "x squid-nocache"
      for (i = 1; i <= n; i++) {
        nm = order[i]
        rn = (rps[r, "nginx-rev"] > 0) ? rps[r, nm] / rps[r, "nginx-rev"] : 0
        rs = (rps[r, "squid-nocache"] > 0) ? rps[r, nm] / rps[r, "squid-nocache"] : 0
        printf "%-15s %9s %8s %11.2f %16.2f\n", nm, rps[r, nm], p99[r, nm], rn, rs
      }
    }
  }' "$TABLE"
