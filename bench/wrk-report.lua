-- wrk's own summary rounds latencies to two digits and mixes units; this prints one
-- machine-readable line with exact microsecond percentiles for run.sh to parse.
-- It defines no request()/response() hooks, so wrk keeps its fast static request path.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%d sockerr=%d non2xx=%d\n",
    summary.requests, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)), math.floor(latency.mean),
    e.connect + e.read + e.write + e.timeout, e.status))
end
