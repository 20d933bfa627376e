"""The report's HTML page: one self-contained file that works offline.

Plotly's JavaScript, the chart specifications and the data are embedded in the page, and the
static charts (scaling, R/Julia against Python) are embedded as PNG data; nothing is fetched. The
page's own script draws the plotly charts, sorts the table by any column, and filters the table
and every chart by framework, model, setup and commit (and hides loaded rows on request). Hovering
a row or a bar shows its environment and the commands its runs came from. The history view
follows each row (implementation x workload x setup on one machine) across commits and framework
versions, as asv's graphs do.
"""
from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone

from harness.summary import (COLUMN_KEYS, ci_cell, colour, column_label, framework_name, interval, none_if_missing,
                             num, order, ratio_cell, row_name, throughput)

CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3;cursor:pointer;user-select:none}th.sorted-asc::after{content:" ▲"}
th.sorted-desc::after{content:" ▼"}td.r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:hover td{background:#f6f9ff}.note{color:#555;font-size:13px}code{background:#f3f3f3;padding:1px 4px}
.controls{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:5}
.controls label{margin-right:1.2em;font-size:14px}dl.env{display:grid;grid-template-columns:max-content 1fr;
gap:2px 12px;font-size:13px}dl.env dt{font-weight:600}dl.env dd{margin:0}.loaded{color:#b35900}
.chart{width:100%;min-height:220px}figure{margin:1em 0}img{max-width:100%}details{margin:.5em 0}"""

SCRIPT = r"""
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const state = {framework: "", model: "", setup: "", commit: "", hideLoaded: false};
function matches(m, ignoreCommit) {
  return (!state.framework || m.framework === state.framework) && (!state.model || m.model === state.model)
    && (!state.setup || m.setup === state.setup) && (ignoreCommit || !state.commit || m.commit === state.commit)
    && !(state.hideLoaded && m.loaded);
}
function apply() {
  let shown = 0, total = 0;
  document.querySelectorAll("tr[data-meta]").forEach(tr => {
    const ok = matches(JSON.parse(tr.dataset.meta), false);
    tr.hidden = !ok; total += 1; shown += ok ? 1 : 0;
  });
  for (const c of DATA.charts) {
    const el = document.getElementById(c.id);
    const visible = c.figure.data.map(t => matches(t.meta, c.history));
    if (el.data) Plotly.restyle(el, {visible: visible});
    el.closest("figure").hidden = !visible.some(Boolean);
  }
  document.querySelectorAll("section[data-meta]").forEach(s => {  // a section: its setup and commit
    const m = JSON.parse(s.dataset.meta);
    s.hidden = (state.setup && m.setup !== state.setup) || (state.commit && m.commit !== state.commit);
  });
  document.getElementById("shown").textContent = `${shown} of ${total} rows`;
  document.body.dataset.shownRows = shown;
}
function sortBy(th) {
  const table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
  const dir = th.classList.contains("sorted-asc") ? -1 : 1;
  table.querySelectorAll("th").forEach(h => h.classList.remove("sorted-asc", "sorted-desc"));
  th.classList.add(dir === 1 ? "sorted-asc" : "sorted-desc");
  const key = tr => { const td = tr.cells[col]; const v = td.dataset.sort ?? td.textContent;
                      const n = parseFloat(v); return isNaN(n) ? v : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * dir; })
    .forEach(tr => body.appendChild(tr));
}
document.querySelectorAll("table.sortable th").forEach(th => th.addEventListener("click", () => sortBy(th)));
for (const name of ["framework", "model", "setup", "commit"]) {
  document.getElementById(`filter-${name}`).addEventListener("change", e => { state[name] = e.target.value; apply(); });
}
document.getElementById("hide-loaded").addEventListener("change", e => { state.hideLoaded = e.target.checked; apply(); });
Promise.all(DATA.charts.map(c => Plotly.newPlot(c.id, c.figure.data, c.figure.layout,
                                                {responsive: true, displaylogo: false})))
  .then(() => { document.body.dataset.rendered = DATA.charts.length; apply(); });
"""


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _json_script(obj) -> str:
    return json.dumps(obj, default=str).replace("</", "<\\/")


def _float(v):
    v = none_if_missing(v)
    return None if v is None else float(v)


def section_filters(section) -> dict:
    """The section's values of the page's setup and commit filters."""
    return {"setup": f"{section.setup} · {section.hardware}", "commit": str(section.key["commit_key"])}


def row_meta(section, r, label: str) -> dict:
    return {"framework": framework_name(r), "model": label, **section_filters(section), "loaded": bool(r["loaded"])}


def _tooltip(section, r, records: dict) -> str:
    """Environment and commands of a row's runs, for a hover."""
    runs = [records[i] for i in r.get("run_ids") or [] if i in records]
    commands = list(dict.fromkeys(x.get("command") or "?" for x in runs))
    versions = {}
    for x in runs:
        for k, v in (x.get("versions") or {}).items():
            versions.setdefault(k, set()).add(str(v))
    lines = [f"{row_name(r)} · {r['model']} · {section.setup}", f"runs: {', '.join(x['run_id'] for x in runs)}",
             "versions: " + ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in sorted(versions.items()))]
    lines += [f"{k}: {v}" for k, v in section.environment if k not in ("Frameworks",)]
    lines += [f"command: {c}" for c in commands]
    if r["loaded"]:
        lines.append(f"⚑ load {num(r['load_max'])} on {r['cores']} cores before a run")
    return "\n".join(lines)


def bars_figure(section, column: tuple, label: str, records: dict) -> dict:
    """Horizontal bars of median throughput with the 95 % interval of the median, one trace per row
    (so that the page's filters can hide rows)."""
    unit, factor = throughput(column[0])
    rows = [r for _, r in section.summary.iterrows() if tuple(r[k] for k in COLUMN_KEYS) == column]
    rows.sort(key=order)
    names = [row_name(r) + (" ⚑" if r["loaded"] else "") for r in rows]
    traces = []
    for name, r in zip(names, rows):
        value = r["median_eps"] * factor
        low, high = _float(r["ci_low_eps"]), _float(r["ci_high_eps"])
        hover = (f"<b>{_esc(name)}</b><br>{num(value)} {unit} (95 % CI {interval(low and low * factor, high and high * factor)})"
                 f"<br>{num(r['median_s'])} s/epoch, n {r['n']}/{r['runs']}<br>× PyTorch {ratio_cell(r)}<br>"
                 + "<br>".join(_esc(line) for line in _tooltip(section, r, records).split("\n")[1:]))
        traces.append({
            "type": "bar", "orientation": "h", "x": [value], "y": [name], "name": name, "showlegend": False,
            "marker": {"color": colour(r["lang"]), "opacity": 0.55 if r["loaded"] else 1.0},
            "error_x": {"type": "data", "symmetric": False, "visible": low is not None,
                        "array": [max(0.0, high * factor - value)] if high is not None else [0],
                        "arrayminus": [max(0.0, value - low * factor)] if low is not None else [0]},
            "text": [num(value)], "textposition": "outside", "cliponaxis": False,
            "hovertemplate": hover + "<extra></extra>", "meta": row_meta(section, r, label)})
    layout = {"title": {"text": f"{label}: median steady {unit} (higher is better); whiskers: 95 % CI of the median",
                        "font": {"size": 14}},
              "xaxis": {"title": {"text": unit}, "rangemode": "tozero"},
              "yaxis": {"categoryorder": "array", "categoryarray": names[::-1], "automargin": True},
              "height": 120 + 34 * len(rows), "margin": {"l": 10, "r": 60, "t": 50, "b": 50},
              "hoverlabel": {"align": "left"}}
    return {"data": traces, "layout": layout}


HISTORY_KEYS = ("machine", "hardware", "device", "gpus", "nodes", "precision", "model", "data", "samples",
                "batch_size", "image_size")
TRACE_KEYS = ("lang", "framework", "backend", "compile")


def history_figures(summary, sections) -> list[tuple[str, dict]]:
    """(title, figure) per machine x setup x workload whose rows were measured at more than one
    commit or framework version: median throughput (95 % CI) against the commit, in date order."""
    from harness.stats import groups

    started = {}
    for s in sections:
        for line in s.environment:
            if line[0] == "Runs":
                started.setdefault(s.key["commit_key"], line[1].split(" from ")[1][:16])
    title_of = {(s.key["commit_key"], s.key["sysenv"], s.key["machine"]): section_filters(s) for s in sections}
    out = []
    for key, g in groups(summary, HISTORY_KEYS):
        points = g.drop_duplicates(["commit_key", "sysenv", "framework_version", *TRACE_KEYS])
        if not any(len(t) > 1 for _, t in groups(points, TRACE_KEYS)):
            continue
        k = dict(zip(HISTORY_KEYS, key))
        unit, factor = throughput(k["model"])
        commits = sorted(set(g["commit_key"]), key=lambda c: (started.get(c, ""), c))
        traces = []
        for _, t in sorted(groups(g, TRACE_KEYS), key=lambda kv: order(kv[1].iloc[0])):
            t = t.assign(_x=t["commit_key"].map(commits.index)).sort_values("_x")
            first = t.iloc[0]
            y = (t["median_eps"] * factor).tolist()
            hi = [(_float(h) or 0) * factor - v if _float(h) is not None else 0 for h, v in zip(t["ci_high_eps"], y)]
            lo = [v - (_float(lw) or 0) * factor if _float(lw) is not None else 0 for lw, v in zip(t["ci_low_eps"], y)]
            text = [f"{framework_name(r)} {r['framework_version']}<br>commit {r['commit_key']} "
                    f"({started.get(r['commit_key'], '?')})<br>{num(r['median_eps'] * factor)} {unit}, "
                    f"n {r['n']}/{r['runs']}" + (" ⚑ loaded" if r["loaded"] else "") for _, r in t.iterrows()]
            meta = {"framework": framework_name(first), "model": k["model"],
                    **title_of.get((first["commit_key"], first["sysenv"], first["machine"]), {}),
                    "loaded": False}
            traces.append({"type": "scatter", "mode": "lines+markers+text",
                           "x": [f"{started.get(c, '?')[:10]} {c[:7]}" for c in t["commit_key"]], "y": y,
                           "text": [str(v) if v else "" for v in t["framework_version"]], "textposition": "top center",
                           "error_y": {"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
                           "name": framework_name(first),
                           "hovertext": text, "hovertemplate": "%{hovertext}<extra></extra>", "meta": meta})
        title = (f"{k['model']} ({k['data']}, {k['samples']:,} examples, batch {k['batch_size']}) · "
                 f"{k['device'].upper()} ×{k['gpus']} {k['precision']} · {k['hardware']}")
        layout = {"title": {"text": f"History: {title}", "font": {"size": 13}},
                  "xaxis": {"title": {"text": "commit (date of its first run); labels: framework version"},
                            "type": "category", "categoryorder": "array",
                            "categoryarray": [f"{started.get(c, '?')[:10]} {c[:7]}" for c in commits]},
                  "yaxis": {"title": {"text": f"{unit} (95 % CI of the median)"}, "rangemode": "tozero"},
                  "height": 420, "margin": {"t": 50}}
        out.append((title, {"data": traces, "layout": layout}))
    return out


def _png(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def page(title: str, sections, summary, records: dict, out, sources: list[str], meanings: dict) -> str:
    from plotly.offline import get_plotlyjs

    charts, rows_html, options = [], [], {"framework": set(), "model": set(), "setup": set(), "commit": set()}
    body = []
    for i, s in enumerate(sections):
        body.append(f'<section id="s{i}" data-meta="{_esc(json.dumps(section_filters(s)))}">'
                    f"<h2>{_esc(s.title)}</h2>")
        body.append("<dl class=env>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in s.environment)
                    + f"<dt>Load</dt><dd>{_esc(s.load)}</dd>"
                    + "<dt>Workloads</dt><dd>" + _esc("; ".join(s.workloads)) + "</dd></dl>")
        body.append("<details><summary>Commands</summary><ul>" + "".join(
            f"<li><code>{_esc(c)}</code> ({n} run{'s' if n != 1 else ''})</li>" for c, n in s.commands) + "</ul></details>")
        for column in s.columns:
            label = column_label(column, s.columns)
            cid = f"bars-{i}-{len(charts)}"
            charts.append({"id": cid, "figure": bars_figure(s, column, label, records), "history": False})
            body.append(f'<figure><div class="chart" id="{cid}"></div></figure>')
        for name, caption in s.charts:
            if not name.startswith("bars-"):  # the bars are drawn by plotly above; the PNGs serve the README
                body.append(f'<figure><img src="{_png(out / name)}" alt="{_esc(caption)}">'
                            f'<figcaption class="note">{_esc(caption)}</figcaption></figure>')
        body.append("</section>")
        for _, r in s.summary.iterrows():
            label = column_label(tuple(r[k] for k in COLUMN_KEYS), s.columns)
            meta = row_meta(s, r, label)
            for k in options:
                options[k].add(meta[k])
            unit, factor = throughput(r["model"])
            cells = [(f"{s.setup} · {s.hardware.split(' (')[0]}", None, "l"), (meta["commit"], None, "l"),
                     (row_name(r) + (" ⚑" if r["loaded"] else ""), None, "l"), (label, None, "l"),
                     (num(r["median_s"]), r["median_s"], "r"), (ci_cell(r), r["ci_low_s"], "r"),
                     (f"{num(r['median_eps'] * factor)} {unit}", r["median_eps"] * factor, "r"),
                     (ratio_cell(r), r["x_pytorch"], "r"), (f"{r['n']}/{r['runs']}", r["n"], "r"),
                     (num(r["first_epoch_s"]), r["first_epoch_s"], "r"), (num(r["startup_s"]), r["startup_s"], "r"),
                     (f"{r['test_accuracy']:.3f}" if none_if_missing(r["test_accuracy"]) is not None else "–",
                      r["test_accuracy"], "r"),
                     (num(r["load_max"]) + (" ⚑" if r["loaded"] else ""), r["load_max"], "r")]
            tds = "".join(f'<td class="{a}"' + (f' data-sort="{_float(v)}"' if _float(v) is not None else
                                                (' data-sort="Infinity"' if a == "r" else "")) + f">{_esc(t)}</td>"
                          for t, v, a in cells)
            rows_html.append(f'<tr data-meta="{_esc(json.dumps(meta))}" title="{_esc(_tooltip(s, r, records))}"'
                             + (' class="loaded"' if r["loaded"] else "") + f">{tds}</tr>")
    history = history_figures(summary, sections)
    hist_html = []
    for j, (name, fig) in enumerate(history):
        cid = f"history-{j}"
        charts.append({"id": cid, "figure": fig, "history": True})
        hist_html.append(f'<figure><div class="chart" id="{cid}"></div></figure>')

    def select(name, label):
        opts = "".join(f'<option value="{_esc(v)}">{_esc(v)}</option>' for v in sorted(options[name]))
        return f'<label>{label} <select id="filter-{name}"><option value="">all</option>{opts}</select></label>'

    header = ["setup", "commit", "implementation", "workload", "s/epoch", "95 % CI of s/epoch", "throughput",
              "× PyTorch (95 % CI)", "n epochs/runs", "first epoch s", "start-up s", "test acc", "load (max)"]
    legend = "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>" for k, v in meanings.items())
    runs = len(records)
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{CSS}</style>",
        f"<script>{get_plotlyjs()}</script></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="note">Generated {datetime.now(timezone.utc).isoformat(timespec="seconds")} by '
        f"<code>python -m harness report {_esc(' '.join(sources))}</code> from {runs} run records. One section per "
        "machine, machine environment, commit and device setup: no section pools two commits or two environments. "
        "This page is self-contained and works offline. Hover a row or a bar for its environment and commands; "
        "click a column to sort.</p>",
        f"<details><summary>What the numbers are</summary><ul>{legend}</ul></details>",
        '<div class="controls">' + select("framework", "Framework") + select("model", "Workload")
        + select("setup", "Setup") + select("commit", "Commit")
        + '<label><input type="checkbox" id="hide-loaded"> hide ⚑ loaded rows</label>'
        + '<span class="note" id="shown"></span></div>',
        "<h2>All rows</h2>",
        '<table class="sortable" id="rows"><thead><tr>' + "".join(f"<th>{_esc(h)}</th>" for h in header)
        + "</tr></thead><tbody>\n" + "\n".join(rows_html) + "\n</tbody></table>",
        *body,
        "<h2>History</h2>",
        ('<p class="note">Each row of a machine and setup over the commits it was measured at (and the framework '
         "version at each, as labels).</p>" + "".join(hist_html)) if hist_html else
        '<p class="note">No row was measured at more than one commit or framework version yet.</p>',
        f'<script type="application/json" id="report-data">{_json_script({"charts": charts})}</script>',
        f"<script>{SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts)

