#!/usr/bin/env python3
"""Number crunching for bench/run.sh (standard library only).

  report.py percentiles H2LOAD_LOG       -> "p50_us p99_us mean_us" from h2load --log-file
  report.py summary RESULTS_DIR          -> markdown tables (median of the rounds) from
                                            RESULTS_DIR/rounds.tsv and meta.env, to stdout
  report.py readme README SUMMARY_FILE   -> replaces the text between the "Latest figures"
                                            markers of README with SUMMARY_FILE

Percentiles are nearest-rank (the smallest sample with at least p% of samples at or
below it), the same definition wrk's HdrHistogram uses, so rows from the two tools
compare.
"""

import math
import sys
from pathlib import Path

BEGIN = "<!-- BEGIN LATEST FIGURES (written by bench/run.sh) -->"
END = "<!-- END LATEST FIGURES -->"

SCENARIOS = {
    "h1": "HTTP/1.1 keep-alive (wrk)",
    "h2c": "HTTP/2 cleartext, prior knowledge (h2load)",
    "h2tls": "HTTP/2 over TLS, ALPN h2 (h2load)",
    "tlsnew": "new TLS connection per request, HTTP/1.1 + Connection: close, sessions resumed (wrk)",
    "tlsfull": "full TLS handshake per request, no resumption, HTTP/1.1 + Connection: close (openssl s_time -new)",
    "h1fixed": "HTTP/1.1 keep-alive at the same offered rate for every target, {rate} req/s (h2load --h1 --rps): "
    "latency and CPU at equal load",
    "h2cfixed": "HTTP/2 cleartext at the same offered rate for every target, {rate} req/s (h2load --rps): "
    "latency and CPU at equal load",
}


def fixed(scen):
    """Whether the scenario offers every target the same rate (throughput is not compared)."""
    return scen.endswith("fixed")


def nearest_rank(sorted_values, p):
    if not sorted_values:
        return 0
    k = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[k - 1]


def percentiles(log_path):
    # h2load --log-file lines: <start time us> TAB <status> TAB <duration us>.
    # Failed requests have status -1; they are counted as errors elsewhere, and
    # their durations are left out of the latency distribution.
    lat = []
    with open(log_path, "r", encoding="ascii", errors="replace") as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            try:
                status = int(parts[1])
                dur = int(parts[2])
            except ValueError:
                continue
            if status > 0:
                lat.append(dur)
    lat.sort()
    mean = sum(lat) // len(lat) if lat else 0
    print(nearest_rank(lat, 50), nearest_rank(lat, 99), mean)


def read_meta(path):
    meta = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            meta[k] = v
    return meta


def median(values):
    values = sorted(values)
    n = len(values)
    if n == 0:
        return None
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2


def fmt_ms(us):
    if us is None or us < 0:
        return "n/a"
    return f"{us / 1000.0:.2f}"


def ratio(a, b):
    if a is None or b is None or a <= 0 or b <= 0:
        return "n/a"
    return f"{a / b:.2f}"


PEERS = ("nginx", "haproxy", "envoy", "pingora", "baseline")


def per_core(v):
    """Requests per second of the server's own CPU time (req/s per core)."""
    return v["rps"] / (v["cpu"] / 100.0) if v and v["cpu"] > 0 else None


def load_rows(results_dir):
    """Median per scenario and target over the rounds in rounds.tsv."""
    raw = {}
    order = []
    lines = (Path(results_dir) / "rounds.tsv").read_text().splitlines()
    for line in lines[1:]:
        if not line.strip():
            continue
        scen, target, _round, rps, p50, p99, mean, errors, conns, cpu, busy = line.split("\t")
        if scen not in raw:
            raw[scen] = {}
            order.append(scen)
        raw[scen].setdefault(target, []).append(
            {
                "rps": float(rps),
                "p50": int(p50),
                "p99": int(p99),
                "mean": int(mean),
                "errors": int(errors),
                "conns": None if conns == "-" else float(conns),
                "cpu": float(cpu),
                "busy": int(busy),
            }
        )
    rows = {}
    for scen, targets in raw.items():
        rows[scen] = {}
        for target, rounds in targets.items():
            conns = [r["conns"] for r in rounds if r["conns"] is not None]
            rows[scen][target] = {
                "rps": median([r["rps"] for r in rounds]),
                "rps_all": [r["rps"] for r in rounds],
                "p50": median([r["p50"] for r in rounds]),
                "p99": median([r["p99"] for r in rounds]),
                "mean": median([r["mean"] for r in rounds]),
                "errors": sum(max(r["errors"], 0) for r in rounds),
                "bad": any(r["errors"] < 0 for r in rounds),
                "conns": median(conns) if conns else None,
                "cpu": median([r["cpu"] for r in rounds]),
                "busy": max(r["busy"] for r in rounds),
            }
    return rows, order


def summary(results_dir):
    results_dir = Path(results_dir)
    meta = read_meta(results_dir / "meta.env")
    rows, order = load_rows(results_dir)

    out = []
    w = out.append
    w(f"Run `{meta.get('stamp', '?')}` ({meta.get('date', '?')}), tollgate commit `{meta.get('commit', '?')}`")
    w("")
    w(f"- machine: {meta.get('nproc', '?')} CPUs, {meta.get('cpu', '?')}, Linux {meta.get('kernel', '?')}")
    peer_versions = [meta[p] for p in ("haproxy", "envoy", "pingora") if meta.get(p)]
    w(f"- tools: {meta.get('nginx', '?')}, wrk {meta.get('wrk', '?')}, {meta.get('h2load', '?')}, {meta.get('openssl', '?')}"
      + "".join(f", {v}" for v in peer_versions))
    peers = [p for p in meta.get("peers", "nginx").split() if p in PEERS]
    w(f"- peers measured: {', '.join(peers) if peers else 'none'}"
      + (f"; skipped: {meta['skipped'].replace(';', '; ')}" if meta.get("skipped") else ""))
    w(f"- pinning (taskset): proxies on CPU {meta.get('proxy_cpus', '?')}, "
      f"load generator on CPU {meta.get('load_cpus', '?')}, upstream on CPU {meta.get('upstream_cpus', '?')}; "
      f"one process per proxy with {meta.get('workers', '?')} worker(s): nginx `worker_processes`, tollgate "
      f"`workers` (plus a runtime thread for admin and health checks), haproxy `nbthread`, envoy `--concurrency`, pingora `threads`")
    w(f"- {meta.get('rounds', '?')} rounds x {meta.get('duration', '?')}s per target (each after a "
      f"{meta.get('warmup', '?')}s warm-up, target order rotated), median shown; access logs off on all proxies; "
      f"upstream: nginx `return 200` ({meta.get('body_bytes', '?')}-byte body), reached over HTTP/1.1 keep-alive by all proxies")
    w(f"- load: h1 `wrk -t1 -c{meta.get('h1_conns', '?')}`; h2c/h2tls `h2load -t1 "
      f"-c{meta.get('h2_conns', '?')} -m{meta.get('h2_streams', '?')}`; tlsnew `wrk -t1 -c{meta.get('tls_conns', '?')}` "
      f"with `Connection: close`; tlsfull {meta.get('tls_conns', '?')} x `openssl s_time -new`; "
      f"h1fixed/h2cfixed the h1/h2c shapes through h2load at {meta.get('fixed_rate', '?')} req/s in all")
    if meta.get("baseline"):
        w(f"- baseline: another tollgate build, `{meta['baseline']}`, same config on its own ports")
    if meta.get("tollgate_preload"):
        w(f"- EXPERIMENT: tollgate ran with LD_PRELOAD={meta['tollgate_preload']}")
    w("- server CPU: CPU time of the target's server processes (tollgate, haproxy, envoy, pingora: the "
      "process, all threads; nginx: master+workers) per second of measurement; req/s per core = req/s / that, "
      "i.e. requests per proxy CPU-second")
    w("")
    flagged = flagged_short = False
    for scen in order:
        r = rows[scen]
        w(f"**{scen}**: {SCENARIOS.get(scen, scen).format(rate=meta.get('fixed_rate', '?'))}")
        w("")
        has_conns = any(v["conns"] is not None for v in r.values())
        head = "| target | req/s | p50 ms | p99 ms | mean ms | errors |"
        sep = "|---|---:|---:|---:|---:|---:|"
        if has_conns:
            head += " new TLS conns/s |"
            sep += "---:|"
        head += " server CPU % | req/s per core |"
        sep += "---:|---:|"
        w(head)
        w(sep)
        for target in ("direct", "tollgate") + PEERS:
            if target not in r:
                if target in peers:
                    w(f"| {target} | — | — | — | — | — |" + (" — |" if has_conns else "") + " — | — |")
                continue
            v = r[target]
            noisy = v["busy"] > int(meta.get("quiet_pct", "10"))
            flagged |= noisy
            errors = f"{v['errors']}" + (" (tool failed)" if v["bad"] else "")
            short = fixed(scen) and v["rps"] < 0.97 * float(meta.get("fixed_rate", "0") or 0)
            flagged_short = flagged_short or short
            mark = (" (!)" if noisy else "") + (" (<)" if short else "")
            line = (f"| {target}{mark} | {v['rps']:.0f} | {fmt_ms(v['p50'])} | "
                    f"{fmt_ms(v['p99'])} | {fmt_ms(v['mean'])} | {errors} |")
            if has_conns:
                line += f" {v['conns']:.0f} |" if v["conns"] is not None else " n/a |"
            core = per_core(v)
            line += f" {v['cpu']:.0f} | {core:.0f} |" if core else f" {v['cpu']:.0f} | n/a |"
            w(line)
        t, d = r.get("tollgate"), r.get("direct")
        parts = []
        for peer in PEERS:
            n = r.get(peer)
            if t and n:
                parts.append(
                    f"tollgate/{peer}: req/s **{ratio(t['rps'], n['rps'])}**, "
                    f"p99 **{ratio(t['p99'], n['p99'])}**, req/s per core {ratio(per_core(t), per_core(n))}"
                )
        if t and d:
            parts.append(
                f"tollgate/direct: req/s {ratio(t['rps'], d['rps'])}, p99 {ratio(t['p99'], d['p99'])}"
            )
        if parts:
            w("")
            w("; ".join(parts))
        if t and len(t["rps_all"]) > 1:
            w("")
            w("req/s per round: " + "; ".join(
                f"{name} " + ", ".join(f"{x:.0f}" for x in r[name]["rps_all"])
                for name in ("tollgate",) + PEERS if name in r))
        w("")
    if flagged:
        w(f"(!) other processes used more than {meta.get('quiet_pct', '10')}% of the machine around "
          "at least one round of this row: treat it with care.")
        w("")
    if flagged_short:
        w("(<) served under 97 % of the offered rate: this target could not keep up, so its latency "
          "is not at the same load as the others'.")
        w("")
    # Requests per proxy CPU-second, every proxy side by side, with tollgate/peer.
    shown = [p for p in PEERS if any(p in rows[s] for s in order)]
    if shown:
        w("**Requests per proxy CPU-second** (req/s per core; in brackets tollgate/peer, above 1 = tollgate "
          "does more per CPU-second)")
        w("")
        w("| scenario | tollgate | " + " | ".join(shown) + " |")
        w("|---|---:|" + "---:|" * len(shown))
        for scen in order:
            t = rows[scen].get("tollgate")
            tc = per_core(t)
            cells = []
            for p in shown:
                pc = per_core(rows[scen].get(p))
                cells.append("—" if pc is None else f"{pc:.0f} ({ratio(tc, pc)})")
            w(f"| {scen} | {'n/a' if tc is None else f'{tc:.0f}'} | " + " | ".join(cells) + " |")
        w("")
    for peer in PEERS:
        verdicts = []
        for scen in order:
            t, n = rows[scen].get("tollgate"), rows[scen].get(peer)
            if not (t and n):
                continue
            parts = [] if fixed(scen) else [f"throughput {'ahead' if t['rps'] >= n['rps'] else 'BEHIND'}"]
            if t["p99"] is not None and t["p99"] > 0 and n["p99"] is not None and n["p99"] > 0:
                parts.append(f"p99 {'ahead' if t['p99'] <= n['p99'] else 'BEHIND'}")
            if not parts:
                continue
            v = f"{scen}: " + ", ".join(parts)
            verdicts.append(v)
        if verdicts:
            w(f"Verdict, tollgate vs {peer}: " + "; ".join(verdicts) + ".")
            w("")
    profiles = meta.get("profiles", "").split()
    if profiles:
        w("Profiles of tollgate recorded in this run (results folder): "
          + ", ".join(f"`{p}`" for p in profiles) + ".")
        w("")
    sys.stdout.write("\n".join(out) + "\n")


def readme(readme_path, summary_path):
    readme_path = Path(readme_path)
    text = readme_path.read_text()
    body = Path(summary_path).read_text().rstrip("\n")
    if BEGIN not in text or END not in text:
        sys.exit(f"{readme_path}: markers not found; add {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme_path.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")


def main(argv):
    if len(argv) == 3 and argv[1] == "percentiles":
        percentiles(argv[2])
    elif len(argv) == 3 and argv[1] == "summary":
        summary(argv[2])
    elif len(argv) == 4 and argv[1] == "readme":
        readme(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
