"""`python -m harness report [RESULTS...]`: a Markdown table and an HTML page with charts.

One section per machine and setup (device, GPU count, precision): frameworks x models, each cell
the median steady seconds per epoch with half the IQR and the sample count, the hardware in the
heading, then the details (95 % interval, examples/s, first epoch, start-up, accuracy parity).
Charts (matplotlib, PNG files beside the page): bars with IQR whiskers per model; examples/s
against the GPU count where a row was run on several; R/Julia against Python per framework where
both exist. Writes OUT/table.md, OUT/index.html and the PNGs; prints the Markdown.
"""
from __future__ import annotations

import html
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness.registry import BACKEND_NAMES, LANGUAGES, display_name
from harness.summary import accuracy_cell as _acc
from harness.summary import markdown_text
from harness.summary import none_if_missing as _none
from harness.summary import num, row_name

SECTION_KEYS = ("machine", "hardware", "device", "gpus", "precision", "nodes")  # cloned VMs can share a machine id
COLUMN_KEYS = ("model", "data", "samples", "batch_size", "image_size")
ROW_NAME_KEYS = ("lang", "framework", "backend", "compile", "version")


def add_arguments(p) -> None:
    p.add_argument("results", nargs="*", default=["results"], help="results folders or record files "
                   "(default: results/)")
    p.add_argument("--out", help="where table.md, index.html and the charts go (default: FIRST_RESULTS/report)")
    p.add_argument("--machine", help="only this machine key")
    p.add_argument("--commit", help="only this commit (a prefix of the commit key)")
    p.add_argument("--suite", help="only runs of this suite")
    p.add_argument("--title", default="DL Rosetta: training time", help="the page's title")
    p.add_argument("--quiet", action="store_true", help="do not print the Markdown")


# ---- formatting -----------------------------------------------------------------------------

def _colour(lang: str) -> str:
    return LANGUAGES[lang].colour if lang in LANGUAGES else "grey"


def _order(r) -> tuple:
    """Rows in registry order: language, framework, backend, compiled last."""
    from harness.registry import FRAMEWORKS, LANGS

    fws = [f.name for f in FRAMEWORKS]
    backends = {f.name: list(f.backends) for f in FRAMEWORKS}.get(r["framework"], [])
    backend = _none(r.get("backend"))
    return (LANGS.index(r["lang"]) if r["lang"] in LANGS else 9,
            fws.index(r["framework"]) if r["framework"] in fws else 99,
            backends.index(backend) if backend in backends else 99, bool(r.get("compile")), str(r.get("version")))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


# ---- the report's structure -----------------------------------------------------------------

@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    align: list[str]  # "l" | "r" per column

    def markdown(self) -> str:
        def line(cells):
            return "| " + " | ".join(markdown_text(c) for c in cells) + " |"

        sep = "| " + " | ".join(":--" if a == "l" else "--:" for a in self.align) + " |"
        return "\n".join([line(self.header), sep] + [line(r) for r in self.rows])

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f'<td class="{a}">{html.escape(c)}</td>' for c, a in zip(r, self.align))
                       + "</tr>\n" for r in self.rows)
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


@dataclass
class Section:
    key: dict  # SECTION_KEYS -> value
    hardware: str
    software: str
    workloads: list[str]
    overview: Table
    details: Table
    summary: object  # the section's rows of the summary DataFrame
    columns: list[tuple]
    slug: str
    charts: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)

    @property
    def title(self) -> str:
        k = self.key
        parts = [k["device"].upper()] + ([f"{k['nodes']} nodes"] if k["nodes"] > 1 else [])
        if k["device"] != "cpu":
            parts.append(f"{k['gpus']} GPU{'s' if k['gpus'] > 1 else ''}" + (" each" if k["nodes"] > 1 else ""))
        return f"{', '.join(parts)}, {k['precision']}: {self.hardware}"


def hardware_line(r) -> str:
    """e.g. 'AMD EPYC (2 cores), 24 GiB RAM, no GPU' for one row of the results."""
    mem = f"{r['memory_bytes'] / 2**30:.0f} GiB RAM" if _none(r.get("memory_bytes")) else "RAM unknown"
    gpu = _none(r.get("gpu"))
    if gpu:
        names = gpu.split(", ")
        gpu = ", ".join(f"{names.count(n)}× {n}" for n in dict.fromkeys(names))
    return f"{r['cpu']} ({r['cores']} cores), {mem}, " + (gpu or "no GPU")


def _column_label(col: tuple, columns: list[tuple]) -> str:
    model, data, samples, batch, image = col
    same_model = [c for c in columns if c[0] == model]
    if len(same_model) == 1:
        return model
    return f"{model} ({data}, {samples:,}" + (f", {image}px" if model == "resnet50" else "") + ")"


def _in_section(rows, key: dict):
    """The rows of one section (every SECTION_KEYS value equal)."""
    mask = True
    for k in SECTION_KEYS:
        mask = mask & (rows[k] == key[k])
    return rows[mask]


def build_sections(frame, summary, index=None) -> list:
    """One Section per machine and setup; `index` (results.index) adds the runs that failed."""
    import pandas as pd

    from harness.specs import MODELS

    if index is None or index.empty:
        index = pd.DataFrame(columns=list(SECTION_KEYS) + ["status"])
    failures = index[index["status"] != "ok"].rename(columns={"framework_version": "version"})

    sections = []
    machines = list(dict.fromkeys(frame["machine"]))  # in the order the records were read
    order = sorted(summary.groupby(list(SECTION_KEYS), dropna=False, sort=False),
                   key=lambda kv: (machines.index(kv[0][0]), kv[0][1], kv[0][2], kv[0][4], kv[0][5], kv[0][3]))
    for skey, srows in order:
        key = dict(zip(SECTION_KEYS, skey))
        fr = _in_section(frame, key)
        srows = srows.copy()
        srows["_order"] = srows.apply(_order, axis=1)
        srows = srows.sort_values("_order")
        fails = _in_section(failures, key)
        failed = {}  # (row name, column) -> number of failed runs
        for _, r in fails.iterrows():
            k = (row_name(r), tuple(r[c] for c in COLUMN_KEYS))
            failed[k] = failed.get(k, 0) + 1
        everything = [r for _, r in srows.iterrows()] + [r for _, r in fails.iterrows()]
        columns = sorted({tuple(r[k] for k in COLUMN_KEYS) for r in everything},
                         key=lambda c: (MODELS.index(c[0]) if c[0] in MODELS else 9, str(c[1:])))
        col_labels = [_column_label(c, columns) for c in columns]
        names = list(dict.fromkeys(row_name(r) for r in sorted(everything, key=_order)))
        cells = {(row_name(r), tuple(r[k] for k in COLUMN_KEYS)): r for _, r in srows.iterrows()}
        overview = Table(["Framework"] + col_labels, [], ["l"] + ["r"] * len(columns))
        for name in names:
            row = [name]
            for c in columns:
                r, nfail = cells.get((name, c)), failed.get((name, c), 0)
                text = "–" if r is None else f"{num(r['median_s'])} ± {num(r['iqr_s'] / 2)} ({r['n']}/{r['runs']})"
                if nfail:
                    text = f"failed ({nfail} runs)" if r is None else f"{text}, {nfail} failed"
                row.append(text)
            overview.rows.append(row)
        details = Table(["Implementation", "Model", "s/epoch", "95 % CI (coverage)", "IQR", "examples/s", "n/runs",
                         "failed runs", "first epoch s", "start-up s", "test accuracy"], [], ["l", "l"] + ["r"] * 9)
        for c, label in zip(columns, col_labels):
            for name in names:
                r, nfail = cells.get((name, c)), str(failed.get((name, c), 0))
                if r is None:
                    if nfail != "0":
                        details.rows.append([name, label] + ["–"] * 5 + [nfail] + ["–"] * 3)
                    continue
                ci = (f"{num(r['ci_low_s'])}–{num(r['ci_high_s'])} ({r['ci_level']:.1%})"
                      if _none(r["ci_level"]) else "n < 6")
                eps = num(r["median_eps"])
                n = r["gpus"] * r["nodes"]  # replicas
                if n > 1 and _none(r.get("scaling_efficiency")) is not None:
                    eps += f" ({r['scaling_efficiency']:.0%} of {n}× one device)"
                details.rows.append([name, label, num(r["median_s"]), ci, num(r["iqr_s"]), eps,
                                     f"{r['n']}/{r['runs']}", nfail, num(r["first_epoch_s"]), num(r["startup_s"]),
                                     _acc(r)])
        workloads = []
        for c, label in zip(columns, col_labels):
            model, data, samples, batch, image = c
            epochs = sorted(fr[(fr["model"] == model) & (fr["samples"] == samples)]["epochs"].dropna().unique())
            text = f"{label}: {data} data, {samples:,} training examples, batch {batch}"
            text += f", {'/'.join(str(int(e)) for e in epochs)} epochs per run" if epochs else ""
            if model == "resnet50":
                text += f", {image}×{image} px"
            workloads.append(text)
        commits = ", ".join(sorted(fr["commit_key"].dropna().unique()))
        started = fr["started"].dropna()
        when = f"{started.min()[:10]} to {started.max()[:10]}" if len(started) else "unknown dates"
        python = ", ".join(sorted(fr["python"].dropna().unique())) if "python" in fr else "?"
        software = f"commit {commits}; Python {python}; runs from {when}; {fr['platform'].dropna().iloc[0]}" \
            if fr["platform"].notna().any() else f"commit {commits}; Python {python}; runs from {when}"
        hardware = key["hardware"]
        load = fr.drop_duplicates("run_id")["load_1m"].dropna() if "load_1m" in fr else ()
        if len(load):
            software += (f"; load average (1 min) before each run: median {load.median():.1f}, "
                         f"max {load.max():.1f} on {fr['cores'].iloc[0]} cores")
        chip = (_none(fr["gpu"].iloc[0]) or "").split(", ")[0] or fr["cpu"].iloc[0]
        sections.append(Section(key, hardware, software, workloads, overview, details, srows, columns,
                                slug(f"{chip}-{key['device']}-{key['precision']}-x{key['gpus']}"
                                     + (f"-n{key['nodes']}" if key["nodes"] > 1 else ""))))
    seen = {}
    for s in sections:  # two machines with the same hardware name: tell them apart by machine key
        seen.setdefault(s.slug, []).append(s)
    for same in seen.values():
        if len(same) > 1:
            for s in same:
                s.slug += f"-{s.key['machine'][:8]}"
    return sections


def markdown(sections, charts_prefix: str = "") -> str:
    out = []
    for s in sections:
        out += [f"### {markdown_text(s.title)}", "",
                "Steady seconds per epoch (epoch 0, the warm-up, excluded): median ± half the interquartile "
                "range (steady epochs/runs). " + markdown_text("; ".join(s.workloads)) + ".", "",
                s.overview.markdown(), ""]
        for name, caption in s.charts[:1]:
            out += [f"![{markdown_text(caption)}]({charts_prefix}{name})", ""]
        out += ["<details><summary>Details: 95 % interval for the median, throughput, warm-up, start-up, "
                "accuracy</summary>", "", s.details.markdown(), "",
                f"Hardware: {markdown_text(s.hardware)}. Software: {markdown_text(s.software)}. Test accuracy is a parity check "
                "(⚠: more than 5 points from the median of all rows of that model), not a ranking.", "",
                "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


# ---- charts ---------------------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def chart_bars(section, path: Path) -> None:
    s = section.summary
    ncols = len(section.columns)
    names = list(dict.fromkeys(row_name(r) for _, r in s.iterrows()))
    fig = _figure(max(7.0, 4.6 * ncols + 0.8), 0.42 * len(names) + 1.6)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax, col in zip(axes, section.columns):
        rows = [r for _, r in s.iterrows() if tuple(r[k] for k in COLUMN_KEYS) == col]
        rows.sort(key=lambda r: names.index(row_name(r)))
        labels = [row_name(r) for r in rows]
        med = [r["median_s"] for r in rows]
        err = [[max(0.0, r["median_s"] - r["q1_s"]) for r in rows], [max(0.0, r["q3_s"] - r["median_s"]) for r in rows]]
        y = list(range(len(rows)))[::-1]
        ax.barh(y, med, xerr=err, color=[_colour(r["lang"]) for r in rows], capsize=3,
                error_kw={"elinewidth": 1})
        ax.set_yticks(y, labels)
        for yi, m, r in zip(y, med, rows):
            if not math.isnan(m):  # beside the whisker's end, not on it
                ax.annotate(num(m), (max(m, r["q3_s"]), yi), xytext=(4, -3), textcoords="offset points", fontsize=8)
        ax.set_title(_column_label(col, section.columns))
        ax.set_xlabel("seconds per epoch (lower is better)")
        ax.margins(x=0.18)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{section.title}\nmedian steady epoch, whiskers: interquartile range", fontsize=10)
    fig.savefig(path)


def chart_scaling(summary, machine, hardware, device, precision, path: Path) -> bool:
    """examples/s against replica count (GPUs x nodes) for every row measured at several counts;
    False if none."""
    s = summary[(summary["machine"] == machine) & (summary["hardware"] == hardware) & (summary["device"] == device)
                & (summary["precision"] == precision)]
    # the global batch may grow with the GPU count (weak scaling): not part of a line's identity
    keys = ["lang", "framework", "backend", "compile", "version", "model", "data", "samples", "image_size"]
    from harness import stats

    s = s.assign(replicas=stats.replicas(s))  # GPUs x nodes
    lines = [g.sort_values("replicas") for _, g in s.groupby(keys, dropna=False) if g["replicas"].nunique() > 1]
    if not lines:
        return False
    models = list(dict.fromkeys(g["model"].iloc[0] for g in lines))
    fig = _figure(4.8 * len(models) + 0.5, 3.8)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        for g in (g for g in lines if g["model"].iloc[0] == model):
            x = g["replicas"].to_numpy()
            y = g["median_eps"].to_numpy()
            err = [y - g["q1_eps"].to_numpy(), g["q3_eps"].to_numpy() - y]
            line = ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=row_name(g.iloc[0]))
            ax.plot(x, y[0] * x / x[0], ls=":", color=line[0].get_color(), alpha=0.6)
        ax.set_title(f"{model}: dotted = linear scaling")
        ax.set_xlabel("GPUs (x nodes)")
        ax.set_ylabel("examples/s (higher is better)")
        ax.set_xticks(sorted(s[s["model"] == model]["replicas"].unique()))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Scaling across GPU counts ({device}, {precision})", fontsize=10)
    fig.savefig(path)
    return True


def chart_languages(section, path: Path) -> bool:
    """R/Julia next to Python for the same framework, backend and model; False if no pair exists."""
    s = section.summary
    pair_keys = ["framework", "backend", "compile"] + list(COLUMN_KEYS)
    groups = [g for _, g in s.groupby(pair_keys, dropna=False)
              if g["lang"].nunique() > 1 and "python" in set(g["lang"])]
    if not groups:
        return False
    fig = _figure(max(7.0, 0.9 * sum(len(g) for g in groups) + 3.0), 4.0)
    ax = fig.subplots()
    x, ticks, labels = 0.0, [], []
    for g in groups:
        g = g.sort_values("lang", key=lambda c: c.map(list(LANGUAGES).index))
        python = g[g["lang"] == "python"]["median_s"].iloc[0]
        start = x
        for _, r in g.iterrows():
            err = [[max(0.0, r["median_s"] - r["q1_s"])], [max(0.0, r["q3_s"] - r["median_s"])]]
            ax.bar(x, r["median_s"], yerr=err, color=_colour(r["lang"]), capsize=3, width=0.8,
                   label=LANGUAGES[r["lang"]].display if r["lang"] in LANGUAGES else r["lang"])
            if r["lang"] != "python":
                ax.annotate(f"×{r['median_s'] / python:.2f}", (x, max(r["median_s"], r["q3_s"])), ha="center",
                            xytext=(0, 3), textcoords="offset points", fontsize=8)
            x += 1
        ticks.append((start + x - 1) / 2)
        first = g.iloc[0]
        backend = f" ({BACKEND_NAMES.get(first['backend'], first['backend'])})" if _none(first["backend"]) else ""
        labels.append(f"{display_name('python', first['framework'])}{backend}\n{first['model']}")
        x += 0.8
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    fig.legend(unique.values(), unique.keys(), fontsize=8, loc="outside right upper")
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_xlim(-1.2, x + 0.4)
    ax.set_ylabel("seconds per epoch (lower is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"R/Julia vs Python on the same framework (×: ratio to Python)\n{section.title}", fontsize=9)
    fig.savefig(path)
    return True


# ---- the page -------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3}td.r{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
.note{color:#555;font-size:13px}code{background:#f3f3f3;padding:1px 4px}"""


def page(title: str, sections, sources: list[str], frame) -> str:
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class=\"note\">Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by "
             f"<code>python -m harness report {html.escape(' '.join(sources))}</code> from "
             f"{frame['run_id'].nunique()} runs. Steady epoch = every epoch after the first (warm-up). "
             "Cells: median ± half the interquartile range (steady epochs/runs). The 95 % interval for the median "
             "is the distribution-free order-statistic interval with its exact coverage (needs ≥ 6 samples). "
             "Test accuracy is a parity check (⚠: more than 5 points from the median of that model's rows), "
             "not a ranking.</p>"]
    for s in sections:
        parts += [f"<h2>{html.escape(s.title)}</h2>",
                  f"<p>{html.escape('; '.join(s.workloads))}.</p>", s.overview.html()]
        for name, caption in s.charts:
            parts.append(f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
                         f"<figcaption class=\"note\">{html.escape(caption)}</figcaption></figure>")
        parts += ["<h3>Details</h3>", s.details.html(),
                  f"<p class=\"note\">Hardware: {html.escape(s.hardware)}. Software: {html.escape(s.software)}.</p>"]
    parts.append("<h2>Versions and commands</h2>")
    runs = frame.drop_duplicates("run_id")
    versions = Table(["Implementation", "Version", "Environment", "Commit", "Runs"], [], ["l", "l", "l", "l", "r"])
    for (label, version, env, commit), g in runs.groupby(["label", "framework_version", "env", "commit_key"],
                                                         dropna=False):
        versions.rows.append([str(label), str(_none(version) or "?"), str(env), str(commit), str(len(g))])
    parts += [versions.html(), "</body></html>"]
    return "\n".join(parts)


def build(paths, out: Path, title: str = "DL Rosetta: training time", **keys):
    """Write table.md, index.html and the charts into `out`; returns (markdown, sections)."""
    from harness import results, stats

    frame = results.load(*paths, **keys)
    if frame.empty:
        from harness.errors import UsageError

        raise UsageError(f"no run records with epochs under {', '.join(map(str, paths))}")
    frame["hardware"] = frame.apply(hardware_line, axis=1)
    report_keys = ("machine", "hardware") + stats.ROW_KEYS + ("framework_version",)
    summary = stats.summarize(frame, keys=report_keys)
    index = results.index(*paths, **keys)
    index["hardware"] = index.apply(hardware_line, axis=1)
    if summary.empty:
        from harness.errors import UsageError

        raise UsageError("no successful runs to report")
    out.mkdir(parents=True, exist_ok=True)
    sections = build_sections(frame, summary, index)
    done_scaling = set()
    for s in sections:
        name = f"bars-{s.slug}.png"
        chart_bars(s, out / name)
        s.charts.append((name, f"{s.title}: median steady seconds per epoch, whiskers = interquartile range"))
        scaling_key = (s.key["machine"], s.key["hardware"], s.key["device"], s.key["precision"])
        if scaling_key not in done_scaling:
            done_scaling.add(scaling_key)
            name = f"scaling-{s.slug.rsplit('-x', 1)[0]}.png"
            if chart_scaling(summary, *scaling_key, out / name):
                s.charts.append((name, "examples/s against the number of GPUs (weak scaling unless stated)"))
        name = f"languages-{s.slug}.png"
        if chart_languages(s, out / name):
            s.charts.append((name, "R/Julia against Python on the same framework and backend"))
    md = markdown(sections)
    from harness.results import write_atomic

    write_atomic(out / "table.md", md)
    write_atomic(out / "index.html", page(title, sections, [str(p) for p in paths], frame))
    return md, sections


def main(args) -> int:
    from harness.errors import UsageError

    for p in args.results:
        if not Path(p).exists():
            raise UsageError(f"no results at {p}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("the report needs matplotlib: pip install -e '.[report]'") from None
    first = Path(args.results[0])
    out = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / "report"
    md, sections = build(args.results, out, args.title, machine=args.machine, commit=args.commit, suite=args.suite)
    if not args.quiet:
        print(md)
    print(f"report: {out / 'index.html'} ({sum(len(s.charts) for s in sections)} charts), {out / 'table.md'}",
          file=sys.stderr)
    return 0
