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
