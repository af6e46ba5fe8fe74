# perf helpers shared by the bench scripts (sourced, not run).

# Whether perf can sample here (the cpu-clock software event: VMs often lack hardware counters).
perf_works() { command -v perf >/dev/null && perf record -q -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; }

# A perf.data's samples by shared object and symbol, one line each, as profile_diff.py reads them.
perf_samples() { # perf.data out.txt
  perf report -i "$1" --stdio --no-children -g none --sort dso,sym -F sample,dso,sym 2>/dev/null |
    grep -v '^#' | grep -v '^$' | sed -E 's/ +$//' >"$2" || true
}
