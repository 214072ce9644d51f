# Helpers shared by the bench scripts (sourced).

# User+system clock ticks of a process and its children (nginx's worker is a child of its
# master), from /proc; divide by `getconf CLK_TCK` for seconds.
ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo $total
}

# Waits (20 s at most each) until every given port on 127.0.0.1 has a listener; fails loudly
# when one never comes up, rather than measuring a server that is not there.
wait_ports() {
  local port i
  for port in "$@"; do
    for i in $(seq 1 80); do ss -Hltn "sport = :$port" | grep -q . && continue 2; sleep 0.25; done
    echo "nothing listening on port $port"; exit 1
  done
}
