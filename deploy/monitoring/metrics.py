#!/usr/bin/env python3
"""The metric names behind alerts.yml and tollgate-dashboard.json, kept honest.

  metrics.py generate             rewrite metrics.txt from the Rust sources
  metrics.py check [--promtool P] every metric and label the alerts and the dashboard
                                  use is in metrics.txt, and metrics.txt agrees with the
                                  sources (metrics added since are only noted); each
                                  alert has for, severity, annotations and a runbook;
                                  every dashboard panel has queries, and they parse (P)
  metrics.py exposition FILE...   compare Prometheus text expositions (curl of the
                                  proxy's admin /metrics, the control service's
                                  /metrics) with metrics.txt

metrics.txt is read from the sources rather than from a live /metrics because a
labelled family only shows up there once one of its series is used (a budget cut, a
Redis fallback), and a source scan needs no running proxy. `exposition` checks the
scan against a real exposition: see README.md in this folder.

Standard library only.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
METRICS_TXT = os.path.join(HERE, "metrics.txt")
ALERTS = os.path.join(HERE, "alerts.yml")
DASHBOARD = os.path.join(HERE, "tollgate-dashboard.json")

# Crates whose sources register metrics, and the component serving them.
SOURCES = {"proxy/src": "proxy", "control/src": "control", "filters/src": "proxy"}
# Names a constructor takes that never reach a registry.
NOT_EXPORTED = {"tollgate_unexported"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}

CONSTRUCTOR = re.compile(
    r"\b(HistogramOpts::new|Opts::new|IntGauge::new|IntCounter::new|Gauge::new|"
    r"Counter::new|Histogram::new|counter|gauge)\(\s*\"(tollgate_[a-z0-9_]+)\""
)
VEC_BEFORE_OPTS = re.compile(
    r"\b(IntCounterVec|IntGaugeVec|CounterVec|GaugeVec|IntCounter|IntGauge|Counter|Gauge)"
    r"::(?:new|with_opts)\(\s*$"
)
LABEL_LIST = re.compile(r'&\[\s*((?:"[a-z_][a-z0-9_]*"\s*,?\s*)*)\]')


# ------------------------------------------------------------------ source scan


def _skip_string(src, i):
    """Index just after the string literal starting at src[i] == '"'."""
    i += 1
    while i < len(src):
        if src[i] == "\\":
            i += 2
            continue
        if src[i] == '"':
            return i + 1
        i += 1
    return i


def _labels_after(src, start):
    """The label list of the constructor call whose name literal ends at `start`."""
    depth, i = 0, start
    while i < len(src):
        c = src[i]
        if c == '"':
            if src.startswith('"tollgate_', i):
                return []  # the next metric: this one has no labels
            i = _skip_string(src, i)
            continue
        if c == "&" and src.startswith("&[", i):
            m = LABEL_LIST.match(src, i)
            if m:
                return re.findall(r'"([a-z_][a-z0-9_]*)"', m.group(1))
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < -1:
                return []
        elif c == ";":
            return []
        i += 1
    return []


def _kind(src, m):
    ctor = m.group(1)
    if ctor in ("HistogramOpts::new", "Histogram::new"):
        return "histogram"
    if ctor in ("IntGauge::new", "Gauge::new", "gauge"):
        return "gauge"
    if ctor in ("IntCounter::new", "Counter::new", "counter"):
        return "counter"
    outer = VEC_BEFORE_OPTS.search(src, 0, m.start())
    if outer and outer.end() == m.start():
        return "gauge" if "Gauge" in outer.group(1) else "counter"
    raise SystemExit(f"metrics.py: cannot tell the type of {m.group(2)}")


def scan_sources():
    """{name: (type, component, [labels])} of every metric the sources register."""
    found = {}
    for rel, component in SOURCES.items():
        for dirpath, _, files in os.walk(os.path.join(ROOT, rel)):
            for f in sorted(files):
                if not f.endswith(".rs"):
                    continue
                path = os.path.join(dirpath, f)
                with open(path, encoding="utf-8") as fh:
                    src = fh.read()
                for m in CONSTRUCTOR.finditer(src):
                    name = m.group(2)
                    if name in NOT_EXPORTED:
                        continue
                    entry = (_kind(src, m), component, _labels_after(src, m.end()))
                    where = os.path.relpath(path, ROOT)
                    if name in found and found[name][:3] != entry:
                        raise SystemExit(
                            f"metrics.py: {name} registered twice, differently "
                            f"({found[name][3]} and {where})"
                        )
                    found.setdefault(name, entry + (where,))
    if not found:
        raise SystemExit("metrics.py: no metric found in the sources")
    return {k: v[:3] for k, v in found.items()}


def render(metrics):
    out = [
        "# Every metric Tollgate exports: name, type, component, labels (- for none).",
        "# Generated from the Rust sources by deploy/monitoring/metrics.py generate;",
        "# do not edit. Prometheus adds job and instance; histograms are queried as",
        "# <name>_bucket{le}, <name>_sum and <name>_count.",
    ]
    for name in sorted(metrics):
        kind, component, labels = metrics[name]
        out.append(f"{name} {kind} {component} {','.join(labels) or '-'}")
    return "\n".join(out) + "\n"


def read_metrics_txt():
    metrics = {}
    with open(METRICS_TXT, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip() or line.startswith("#"):
                continue
            name, kind, component, labels = line.split()
            metrics[name] = (kind, component, [] if labels == "-" else labels.split(","))
    return metrics


def series_names(metrics):
    """{series name: label set} as queried (histograms expanded)."""
    out = {}
    for name, (kind, _, labels) in metrics.items():
        base = set(labels) | TARGET_LABELS
        if kind == "histogram":
            out[name + "_bucket"] = base | {"le"}
            out[name + "_sum"] = base
            out[name + "_count"] = base
        else:
            out[name] = base
    return out


# ---------------------------------------------------------------- PromQL checks

GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
METRIC = re.compile(r"(?<![A-Za-z0-9_:])(tollgate_[A-Za-z0-9_:]+)")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\"")


def grafana_to_promql(expr):
    """Replaces the dashboard's variables by values PromQL accepts."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    expr = re.sub(r"\$\{__(rate_interval|interval|range)\}", "5m", expr)
    expr = re.sub(r"\$\{[a-z_]+(:[a-z]+)?\}|\$[a-z_]+\b", ".*", expr)
    return expr


def _strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def selectors(expr):
    """(metric name, matcher block or "") of each tollgate selector in `expr`."""
    out, i = [], 0
    while i < len(expr):
        if expr[i] == '"':
            i = _skip_string(expr, i)
            continue
        m = METRIC.match(expr, i)
        if m and (i == 0 or not re.match(r"[A-Za-z0-9_:]", expr[i - 1])):
            j = m.end()
            while j < len(expr) and expr[j].isspace():
                j += 1
            block = ""
            if j < len(expr) and expr[j] == "{":
                k = j + 1
                while k < len(expr) and expr[k] != "}":
                    k = _skip_string(expr, k) if expr[k] == '"' else k + 1
                block = expr[j : k + 1]
                j = k + 1
            out.append((m.group(1), block))
            i = j
            continue
        i += 1
    return out


def check_expr(expr, where, known, errors):
    """Metric and label names of one PromQL expression against `known`."""
    found = selectors(expr)
    names = [n for n, _ in found]
    for name, block in found:
        if name not in known:
            errors.append(f"{where}: unknown metric {name}")
            continue
        for label, _ in MATCHER.findall(block):
            if label not in known[name]:
                errors.append(f"{where}: {name} has no label {label!r}")
    if not names:
        errors.append(f"{where}: no tollgate metric in {expr!r}")
    available = set(TARGET_LABELS) | {"le"}
    for n in names:
        available |= known.get(n, set())
    for _, labels in GROUPING.findall(_strip_strings(expr)):
        for label in (x.strip() for x in labels.split(",")):
            if label and label not in available:
                errors.append(f"{where}: label {label!r} is on none of {sorted(set(names))}")
    return names


# ------------------------------------------------------------------ alerts.yml


def alert_exprs():
    """(alert name, expr) of alerts.yml; reads the block scalars this file uses."""
    lines = open(ALERTS, encoding="utf-8").read().split("\n")
    out, alert, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^\s*- (alert|record): (\S+)", line)
        if m:
            alert = m.group(2)
        m = re.match(r"^(\s*)expr: ?(.*)$", line)
        if m:
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in ("|", "|-", ">", ">-", "|+", ">+"):
                body = []
                i += 1
                while i < len(lines) and (
                    not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
                ):
                    body.append(lines[i].strip())
                    i += 1
                out.append((alert, " ".join(b for b in body if b)))
                continue
            out.append((alert, value.strip("'\"")))
        i += 1
    return out


def check_alert_blocks(errors):
    """Each alert has for, severity, summary, description, and a runbook that exists."""
    text = open(ALERTS, encoding="utf-8").read()
    readme = open(os.path.join(HERE, "README.md"), encoding="utf-8").read()
    anchors = {h.lower() for h in re.findall(r"^#+ (\w+)\s*$", readme, re.M)}
    blocks = re.split(r"^\s*- alert: ", text, flags=re.M)[1:]
    for block in blocks:
        name = block.split()[0]
        for key in ("expr", "for", "summary", "description", "runbook_url"):
            if not re.search(rf"^\s+{key}:", block, re.M):
                errors.append(f"alert {name}: no {key}")
        if not re.search(r"^\s+severity: (critical|warning|info)\s*$", block, re.M):
            errors.append(f"alert {name}: severity is not critical, warning or info")
        m = re.search(r'runbook_url: "deploy/monitoring/README.md#(\w+)"', block)
        if not m or m.group(1) not in anchors:
            errors.append(f"alert {name}: runbook_url is not a heading of deploy/monitoring/README.md")
    return len(blocks)


# ------------------------------------------------------------------- dashboard


def dashboard_panels(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []):  # collapsed rows
            yield q


def check_dashboard(known, errors):
    with open(DASHBOARD, encoding="utf-8") as fh:
        dash = json.load(fh)
    exprs = []
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append("dashboard: needs a `datasource` variable of type datasource (prometheus)")
    app = variables.get("app")
    if not app:
        errors.append("dashboard: needs an `app` variable")
    else:
        q = app.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q or ""
        m = re.fullmatch(r"\s*label_values\((\w+),\s*(\w+)\)\s*", q)
        if not m:
            errors.append(f"dashboard: `app` variable is not label_values(metric, label): {q!r}")
        elif m.group(1) not in known or m.group(2) not in known[m.group(1)]:
            errors.append(f"dashboard: `app` variable reads unknown {m.group(1)}/{m.group(2)}")
    ids = set()
    for p in dashboard_panels(dash):
        title = p.get("title", "?")
        if p.get("id") in ids:
            errors.append(f"dashboard: panel id {p.get('id')} used twice")
        ids.add(p.get("id"))
        if "gridPos" not in p:
            errors.append(f"dashboard: panel {title!r} has no gridPos")
        if p.get("type") in ("row", "text"):
            continue
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            errors.append(f"dashboard: panel {title!r} does not use ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"dashboard: panel {title!r} has no targets")
        for t in targets:
            expr = (t.get("expr") or "").strip()
            where = f"dashboard panel {title!r} ({t.get('refId', '?')})"
            if not expr:
                errors.append(f"{where}: empty expr")
                continue
            promql = grafana_to_promql(expr)
            check_expr(promql, where, known, errors)
            exprs.append((where, promql))
    return exprs


def promtool_parse(promtool, exprs, errors):
    """Parses every dashboard query with promtool (as recording rules)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as fh:
        fh.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, (_, expr) in enumerate(exprs):
            fh.write(f"      - record: dashboard:query_{i}\n")
            fh.write(f"        expr: {json.dumps(expr)}\n")
        path = fh.name
    try:
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            text = r.stdout + r.stderr
            for i, (where, _) in enumerate(exprs):
                text = text.replace(f"dashboard:query_{i}", where)
            errors.append("dashboard queries do not parse:\n" + text)
    finally:
        os.unlink(path)


# ---------------------------------------------------------------- commands


def cmd_generate():
    with open(METRICS_TXT, "w", encoding="utf-8") as fh:
        fh.write(render(scan_sources()))
    print(f"wrote {os.path.relpath(METRICS_TXT, ROOT)}")


def cmd_check(promtool):
    errors = []
    listed, scanned = read_metrics_txt(), scan_sources()
    changed = sorted(n for n in listed if scanned.get(n) != listed[n])
    added = sorted(set(scanned) - set(listed))
    if changed:
        errors.append(
            "metrics.txt lists metrics the sources no longer register, or register with "
            "another type or labels: " + ", ".join(changed) + ". Run "
            "deploy/monitoring/metrics.py generate, then fix the alerts and the dashboard."
        )
    if added:
        print(
            "check-monitoring: note: not in metrics.txt yet (run deploy/monitoring/metrics.py "
            "generate): " + ", ".join(added),
            file=sys.stderr,
        )
    known = series_names(read_metrics_txt())
    used = set()
    for alert, expr in alert_exprs():
        used.update(check_expr(expr, f"alert {alert}", known, errors))
    check_alert_blocks(errors)
    exprs = check_dashboard(known, errors)
    for _, e in exprs:
        used.update(n for n, _ in selectors(e))
    if promtool:
        promtool_parse(promtool, exprs, errors)
    if errors:
        for e in errors:
            print("check-monitoring: " + e, file=sys.stderr)
        return 1
    print(
        f"check-monitoring: {len(alert_exprs())} alert expressions and {len(exprs)} "
        f"dashboard queries use {len(used)} of {len(known)} known series names"
    )
    return 0


def parse_exposition(text):
    """{family: (type, label names seen)} of a Prometheus text exposition."""
    types, labels = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
            labels.setdefault(name, set())
        elif line and not line.startswith("#"):
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?", line)
            name = m.group(1)
            family = name
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
                    family = name[: -len(suffix)]
            found = set(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', m.group(2) or ""))
            labels.setdefault(family, set()).update(found - {"le"})
    return {n: (types.get(n, "untyped"), labels[n]) for n in labels}


def cmd_exposition(files):
    metrics = read_metrics_txt()
    seen, problems = {}, []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for name, v in parse_exposition(fh.read()).items():
                seen[name] = v
    for name, (kind, labels) in sorted(seen.items()):
        if not name.startswith("tollgate_"):
            continue
        if name not in metrics:
            problems.append(f"{name}: exposed but not in metrics.txt")
            continue
        want_kind, _, want_labels = metrics[name]
        if kind != want_kind:
            problems.append(f"{name}: exposed as {kind}, metrics.txt says {want_kind}")
        if labels and labels != set(want_labels):
            problems.append(f"{name}: exposed labels {sorted(labels)}, metrics.txt {want_labels}")
    missing = sorted(set(metrics) - set(seen))
    for p in problems:
        print("exposition: " + p, file=sys.stderr)
    print(
        f"exposition: {len([n for n in seen if n.startswith('tollgate_')])} tollgate families "
        f"exposed, all in metrics.txt{' except the above' if problems else ''}; "
        f"{len(missing)} listed but not exposed (labelled families appear once used): "
        + (", ".join(missing) or "none")
    )
    return 1 if problems else 0


def main(argv):
    if len(argv) >= 1 and argv[0] == "generate":
        cmd_generate()
        return 0
    if len(argv) >= 1 and argv[0] == "check":
        promtool = None
        if len(argv) == 3 and argv[1] == "--promtool":
            promtool = argv[2]
        elif len(argv) != 1:
            print(__doc__, file=sys.stderr)
            return 2
        return cmd_check(promtool)
    if len(argv) >= 2 and argv[0] == "exposition":
        return cmd_exposition(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
