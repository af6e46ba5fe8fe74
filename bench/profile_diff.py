#!/usr/bin/env python3
"""CPU per request by symbol, from perf profiles of one process under different loads, and
what each load costs beyond the first (standard library only).

  profile_diff.py HZ DIR BASE OTHER...

Reads DIR/perf-<name>.txt (`perf report --stdio --no-children --sort dso,sym -F sample,dso,sym`
of a `perf record -F HZ -e cpu-clock` run) and DIR/perf-<name>.requests (requests served while
it sampled). A sample stands for 1/HZ s of CPU, so a symbol's µs per request is
samples * 1e6 / HZ / requests. Prints each profile's total and top symbols, then for each
OTHER the symbols whose µs per request grew most over BASE, and the change per shared object.
"""

import re
import sys
from pathlib import Path

LINE = re.compile(r"\s*(\d+)\s+(\S+)\s+(\[.\]\s+.*)$")
TOP = 15


def load(directory, name, hz):
    """{(dso, symbol): µs per request} and the requests it is normalised by."""
    requests = int(Path(directory, f"perf-{name}.requests").read_text().split()[0])
    per = {}
    for line in Path(directory, f"perf-{name}.txt").read_text().splitlines():
        m = LINE.match(line)
        if m:
            key = (m.group(2), m.group(3))
            per[key] = per.get(key, 0.0) + int(m.group(1)) * 1e6 / hz / max(requests, 1)
    return per, requests


def by_dso(per):
    out = {}
    for (dso, _), us in per.items():
        out[dso] = out.get(dso, 0.0) + us
    return out


def main(argv):
    if len(argv) < 5:
        sys.exit(__doc__)
    hz, directory, base, others = float(argv[1]), argv[2], argv[3], argv[4:]
    profiles = {n: load(directory, n, hz) for n in [base] + others}
    for name, (per, requests) in profiles.items():
        total = sum(per.values())
        print(f"{name}: {total:.2f} µs of CPU per request ({requests} requests)")
        for (dso, sym), us in sorted(per.items(), key=lambda kv: -kv[1])[:TOP]:
            print(f"  {us:6.3f}  {100 * us / total:5.1f} %  {dso}  {sym[:150]}")
        print()
    bper = profiles[base][0]
    btotal = sum(bper.values())
    for name in others:
        per = profiles[name][0]
        total = sum(per.values())
        print(f"{name} beyond {base}: {total - btotal:+.2f} µs per request "
              f"({total:.2f} against {btotal:.2f}, {btotal / total:.3f} of the requests per CPU-second)")
        deltas = {k: per.get(k, 0.0) - bper.get(k, 0.0) for k in set(per) | set(bper)}
        print("  by shared object: " + ", ".join(
            f"{dso} {d:+.2f}" for dso, d in sorted(
                ((dso, by_dso(per).get(dso, 0.0) - by_dso(bper).get(dso, 0.0))
                 for dso in set(by_dso(per)) | set(by_dso(bper))), key=lambda x: -abs(x[1]))[:6]))
        for (dso, sym), d in sorted(deltas.items(), key=lambda kv: -kv[1])[:TOP]:
            print(f"  {d:+6.3f}  {dso}  {sym[:150]}")
        print()


if __name__ == "__main__":
    main(sys.argv)
