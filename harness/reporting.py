"""The report of results stores: sections, Markdown tables, the static charts, and the outputs.

Sections. One section per machine, machine environment (OS, Python, CPU, memory, GPUs and driver:
`sysenv`), commit and device setup (device, GPU count, nodes, precision): a section never pools
two commits or two environments; the same machine and setup at another commit is another section,
and the history view follows each row across them. Rows are implementations (with their framework
version); columns the workloads (model, data, size, batch, image size).

Numbers (harness.summary.MEANINGS): the median steady seconds per epoch with the distribution-free
95 % interval of the median and the sample count n (steady epochs/runs), throughput in the model's
unit (images/s, tokens/s), × PyTorch (PyTorch's median s/epoch over the row's, same section and
workload, with a 95 % bootstrap interval), first epoch, start-up (spawn + import + build), test
accuracy as a parity check. Rows whose runs began with the 1-minute load average above the core
count are flagged (⚑).

Outputs (--format):
    html     OUT/index.html: one self-contained page (plotly's JS and the charts embedded, works
             offline): sortable, filterable table and charts, hover for environment and command,
             full environment and commands per section, the history over commits and versions;
             plus OUT/table.md and the matplotlib PNGs the README embeds. Prints the Markdown.
    md       OUT/table.md and the PNGs only; prints the Markdown (the README's tables).
    csv, json, parquet
             OUT/summary.<format>: one row per implementation x workload x section with median,
             interval, n, throughput and the ratio to PyTorch; csv and json are printed too.
--mlflow URI logs every run (parameters, metrics per epoch, environment, command) to MLflow.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.registry import BACKEND_NAMES, LANGUAGES, display_name
from harness.summary import (COLUMN_KEYS, MEANINGS, ci_cell, colour, column_label, interval, num, order, ratio_cell,
                             row_name, throughput)
from harness.summary import accuracy_cell as _acc
from harness.summary import markdown_text, percent
from harness.summary import none_if_missing as _none

# a section: one machine, one machine environment, one commit, one device setup
SECTION_KEYS = ("machine", "hardware", "sysenv", "commit_key", "device", "gpus", "precision", "nodes")


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


@dataclass
class Section:
    key: dict  # SECTION_KEYS -> value
    hardware: str
    environment: list[tuple[str, str]]  # (what, value): CPU, GPUs, OS, Python, frameworks, commit, runs
    commands: list[tuple[str, int]]  # (command, runs)
    workloads: list[str]
    load: str  # the load average line
    overview: Table
    details: Table
    summary: object  # the section's rows of the summary DataFrame
    columns: list[tuple]
    slug: str
    note: str = ""  # what sets this section apart from another with the same title (another environment)
    charts: list[tuple[str, str]] = field(default_factory=list)  # (PNG file name, caption)

    @property
    def setup(self) -> str:
        """e.g. 'CPU, fp32', 'CUDA, 2 nodes, 8 GPUs each, bf16'."""
        k = self.key
        parts = [k["device"].upper()] + ([f"{k['nodes']} nodes"] if k["nodes"] > 1 else [])
        if k["device"] != "cpu":
            parts.append(f"{k['gpus']} GPU{'s' if k['gpus'] > 1 else ''}" + (" each" if k["nodes"] > 1 else ""))
        return f"{', '.join(parts)}, {k['precision']}"

    @property
    def title(self) -> str:
        return f"{self.setup}: {self.hardware} · commit {self.key['commit_key']}" + (f" · {self.note}" if self.note
                                                                                     else "")


def hardware_line(r) -> str:
    """e.g. 'AMD EPYC (2 cores), 24 GiB RAM, no GPU' for one row of the results."""
    mem = f"{r['memory_bytes'] / 2**30:.0f} GiB RAM" if _none(r.get("memory_bytes")) else "RAM unknown"
    gpu = _none(r.get("gpu"))
    if gpu:
        names = gpu.split(", ")
        gpu = ", ".join(f"{names.count(n)}× {n}" for n in dict.fromkeys(names))
    return f"{r['cpu']} ({r['cores']} cores), {mem}, " + (gpu or "no GPU")


SYSENV_FACTS = ("platform", "cpu", "cores", "memory_bytes", "python", "blas_env")


def sysenv(record: dict) -> str:
    """Digest of the machine environment a record ran in (not the framework versions, which are per
    row): OS, CPU, cores, memory, Python, BLAS variables, GPUs with their driver and memory."""
    env = record.get("environment") or {}
    facts = {k: env.get(k) for k in SYSENV_FACTS}
    facts["gpus"] = [(g.get("name"), g.get("driver"), g.get("memory_mib")) for g in env.get("gpus") or []]
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _in_section(rows, key: dict):
    """The rows of one section (every SECTION_KEYS value equal)."""
    mask = True
    for k in SECTION_KEYS:
        mask = mask & (rows[k] == key[k])
    return rows[mask]


def environment_lines(records: list[dict]) -> list[tuple[str, str]]:
    """The full environment of a section's runs: CPU, memory, GPUs and driver, interconnect, OS,
    Python, BLAS variables, each implementation's package versions, the commit, the dates."""
    def values(get):
        return list(dict.fromkeys(str(v) for v in (get(r) for r in records) if v not in (None, "", [], {})))

    env = [r.get("environment") or {} for r in records]
    out = [("CPU", "; ".join(values(lambda r: f"{(r.get('environment') or {}).get('cpu')}, "
                                               f"{(r.get('environment') or {}).get('cores')} cores")))]
    mem = values(lambda r: (r.get("environment") or {}).get("memory_bytes"))
    if mem:
        out.append(("Memory", "; ".join(f"{int(m) / 2**30:.1f} GiB" for m in mem)))
    gpus = values(lambda r: ", ".join(f"{g.get('name')} ({g.get('memory_mib', '?')} MiB, driver {g.get('driver')})"
                                      for g in (r.get("environment") or {}).get("gpus") or []) or None)
    out.append(("GPUs", "; ".join(gpus) if gpus else "none"))
    links = values(lambda r: ((r.get("environment") or {}).get("interconnect") or {}).get("summary"))
    if links:
        out.append(("Interconnect", "; ".join(links)))
    out.append(("OS", "; ".join(values(lambda r: (r.get("environment") or {}).get("platform"))) or "?"))
    out.append(("Python", "; ".join(values(lambda r: (r.get("environment") or {}).get("python"))) or "?"))
    blas = values(lambda r: " ".join(f"{k}={v}" for k, v in ((r.get("environment") or {}).get("blas_env")
                                                              or {}).items()) or None)
    if blas:
        out.append(("Threads", "; ".join(blas)))
    versions = {}
    for r in records:
        name = row_name({**r["impl"], "version": None, "compile": (r.get("config") or {}).get("compile")})
        for k, v in sorted((r.get("versions") or {}).items()):
            versions.setdefault(name, {}).setdefault(k, set()).add(str(v))
    out.append(("Frameworks", "; ".join(f"{name}: " + ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in pkgs.items())
                                        for name, pkgs in versions.items())))
    commits = values(lambda r: ((r.get("environment") or {}).get("git") or {}).get("commit"))
    dirty = any(((e.get("git") or {}).get("dirty")) for e in env)
    out.append(("Commit", ", ".join(commits) + (" (with uncommitted changes: +dirty)" if dirty else "")
                if commits else "unknown"))
    started = sorted(r.get("started") or "" for r in records if r.get("started"))
    if started:
        out.append(("Runs", f"{len(records)} from {started[0][:16].replace('T', ' ')} to "
                            f"{started[-1][:16].replace('T', ' ')} (UTC)"))
    return out


def build_sections(frame, summary, index=None, records=None) -> list:
    """One Section per machine, machine environment, commit and setup; `index` (results.index) adds
    the runs that failed, `records` ({run_id: record}) the environment and the commands."""
    import pandas as pd

    from harness.specs import MODELS

    records = records or {}
    if index is None or index.empty:
        index = pd.DataFrame(columns=list(SECTION_KEYS) + ["status"])
    failures = index[index["status"] != "ok"].rename(columns={"framework_version": "version"})

    machines = list(dict.fromkeys(frame["machine"]))  # in the order the records were read
    first = frame.groupby("commit_key")["started"].min().to_dict()  # a commit's first run
    groups = summary.groupby(list(SECTION_KEYS), dropna=False, sort=False)

    def section_order(kv):
        k = dict(zip(SECTION_KEYS, kv[0]))
        return (machines.index(k["machine"]), k["hardware"], k["device"], k["precision"], k["nodes"], k["gpus"],
                "".join(chr(0x10FFFF - ord(c)) for c in str(first.get(k["commit_key"]) or "")))  # newest first

    sections = []
    for skey, srows in sorted(groups, key=section_order):
        key = dict(zip(SECTION_KEYS, skey))
        fr = _in_section(frame, key)
        srows = srows.copy()
        srows["_order"] = srows.apply(order, axis=1)
        srows = srows.sort_values("_order")
        fails = _in_section(failures, key) if set(SECTION_KEYS) <= set(failures.columns) else failures.iloc[0:0]
        failed = {}  # (row name, column) -> number of failed runs
        for _, r in fails.iterrows():
            k = (row_name(r), tuple(r[c] for c in COLUMN_KEYS))
            failed[k] = failed.get(k, 0) + 1
        everything = [r for _, r in srows.iterrows()] + [r for _, r in fails.iterrows()]
        columns = sorted({tuple(r[k] for k in COLUMN_KEYS) for r in everything},
                         key=lambda c: (MODELS.index(c[0]) if c[0] in MODELS else 9, str(c[1:])))
        col_labels = [column_label(c, columns) for c in columns]
        names = list(dict.fromkeys(row_name(r) for r in sorted(everything, key=order)))
        cells = {(row_name(r), tuple(r[k] for k in COLUMN_KEYS)): r for _, r in srows.iterrows()}

        header = ["Framework"]
        for c, label in zip(columns, col_labels):
            unit = throughput(c[0])[0]
            header += [f"{label} s/epoch (95 % CI where n ≥ 6), n", f"{label} {unit}", f"{label} × PyTorch (95 % CI)"]
        overview = Table(header, [], ["l"] + ["r"] * (len(header) - 1))
        for name in names:
            row = [name]
            for c in columns:
                r, nfail = cells.get((name, c)), failed.get((name, c), 0)
                if r is None:
                    row += [f"failed ({nfail} runs)" if nfail else "–", "–", "–"]
                    continue
                ci = f" ({ci_cell(r)})" if _none(r["ci_level"]) else ""  # no interval below n = 6
                text = f"{num(r['median_s'])}{ci}, n {r['n']}/{r['runs']}" + (" ⚑" if r["loaded"] else "")
                if nfail:
                    text += f", {nfail} failed"
                factor = throughput(r["model"])[1]
                row += [text, num(r["median_eps"] * factor), ratio_cell(r)]
            overview.rows.append(row)

        details = Table(["Implementation", "Model", "s/epoch", "95 % CI (coverage)", "IQR", "throughput", "MFU",
                         "n/runs", "failed runs", "first epoch s", "start-up s", "test accuracy", "load (max)"], [],
                        ["l", "l"] + ["r"] * 11)
        for c, label in zip(columns, col_labels):
            for name in names:
                r, nfail = cells.get((name, c)), str(failed.get((name, c), 0))
                if r is None:
                    if nfail != "0":
                        details.rows.append([name, label] + ["–"] * 6 + [nfail] + ["–"] * 4)
                    continue
                ci = (f"{interval(r['ci_low_s'], r['ci_high_s'])} ({r['ci_level']:.1%})"
                      if _none(r["ci_level"]) else "n < 6")
                unit, factor = throughput(r["model"])
                eps = f"{num(r['median_eps'] * factor)} {unit}"
                n = r["gpus"] * r["nodes"]  # replicas
                if n > 1 and _none(r.get("scaling_efficiency")) is not None:
                    eps += f" ({r['scaling_efficiency']:.0%} of {n}× one device)"
                details.rows.append([name, label, num(r["median_s"]), ci, num(r["iqr_s"]), eps, percent(r.get("mfu")),
                                     f"{r['n']}/{r['runs']}", nfail, num(r["first_epoch_s"]), num(r["startup_s"]),
                                     _acc(r), f"{num(r['load_max'])}" + (" ⚑" if r["loaded"] else "")])
        workloads = []
        for c, label in zip(columns, col_labels):
            model, data, samples, batch, image = c
            epochs = sorted(fr[(fr["model"] == model) & (fr["samples"] == samples)]["epochs"].dropna().unique())
            text = f"{label}: {data} data, {samples:,} training examples, batch {batch}"
            text += f", {'/'.join(str(int(e)) for e in epochs)} epochs per run" if epochs else ""
            if model == "resnet50":
                text += f", {image}×{image} px"
            workloads.append(text)
        runs = fr.drop_duplicates("run_id")
        load = runs["load_1m"].dropna() if "load_1m" in runs else ()
        cores = runs["cores"].iloc[0]
        load_line = (f"load average (1 min) before each run: median {load.median():.1f}, max {load.max():.1f} on "
                     f"{cores} cores" + (f"; ⚑ {int(srows['loaded'].sum())} row(s) measured above {cores}: "
                                         "other work competed for the cores" if srows["loaded"].any() else "")
                     if len(load) else "load average not recorded")
        recs = [records[i] for i in runs["run_id"] if i in records]
        commands = {}
        for r in recs:
            commands[r.get("command") or "?"] = commands.get(r.get("command") or "?", 0) + 1
        chip = (_none(fr["gpu"].iloc[0]) or "").split(", ")[0] or fr["cpu"].iloc[0]
        sections.append(Section(key, key["hardware"], environment_lines(recs), list(commands.items()), workloads,
                                load_line, overview, details, srows, columns,
                                slug(f"{chip}-{key['device']}-{key['precision']}-x{key['gpus']}"
                                     + (f"-n{key['nodes']}" if key["nodes"] > 1 else ""))))
    _tell_apart(sections)
    return sections


def _tell_apart(sections) -> None:
    """Sections that would share a chart name or a title get the commit, machine or environment that
    sets them apart: never two sections that read alike."""
    seen = {}
    for s in sections:
        seen.setdefault(s.slug, []).append(s)
    for same in seen.values():
        if len(same) > 1:
            for what in ("commit_key", "machine", "sysenv"):
                if len({s.key[what] for s in same}) > 1:
                    for s in same:
                        s.slug += "-" + slug(str(s.key[what]))[:12]
    titles = {}
    for s in sections:
        titles.setdefault(s.title, []).append(s)
    for same in titles.values():
        if len(same) > 1:  # same hardware line, setup and commit: another OS, Python, driver or machine
            for s in same:
                s.note = f"machine {s.key['machine'][:8]}, environment {s.key['sysenv']}"


def markdown(sections, charts_prefix: str = "") -> str:
    out = []
    for s in sections:
        out += [f"### {markdown_text(s.title)}", "",
                "Median steady seconds per epoch (epoch 0, the warm-up, excluded) with the distribution-free 95 % "
                "interval of the median (order statistics; needs n ≥ 6) and n = steady epochs/runs; throughput; "
                "× PyTorch = PyTorch's median s/epoch over the row's (above 1: faster), with a 95 % bootstrap "
                "interval. " + markdown_text("; ".join(s.workloads)) + f". The machine's {markdown_text(s.load)}.", "",
                s.overview.markdown(), ""]
        for name, caption in s.charts[:1]:
            out += [f"![{markdown_text(caption)}]({charts_prefix}{name})", ""]
        env = markdown_text("; ".join(f"{k}: {v}" for k, v in s.environment))
        commands = "; ".join(f"`{c}` ({n} runs)" for c, n in s.commands)
        out += ["<details><summary>Details: interval coverage, spread, warm-up, start-up, accuracy, environment, "
                "commands</summary>", "", s.details.markdown(), "",
                f"Environment: {env}.", "", f"Commands: {commands}.", "",
                "Start-up = process spawn + framework import + model build. Test accuracy is a parity check "
                "(⚠: more than 5 points from the median of all rows of that model), not a ranking.", "",
                "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


# ---- static charts (matplotlib, for the README) ---------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def chart_bars(section, path: Path) -> None:
    """Throughput per implementation, one panel per workload; whiskers: the 95 % interval of the
    median (the interquartile range where n < 6)."""
    s = section.summary
    ncols = len(section.columns)
    names = list(dict.fromkeys(row_name(r) for _, r in s.iterrows()))
    fig = _figure(max(7.0, 5.2 * ncols + 0.8), 0.5 * len(names) + 1.8)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax, col in zip(axes, section.columns):
        rows = [r for _, r in s.iterrows() if tuple(r[k] for k in COLUMN_KEYS) == col]
        rows.sort(key=lambda r: names.index(row_name(r)))
        unit, factor = throughput(col[0])
        labels = [row_name(r) + (" ⚑" if r["loaded"] else "") for r in rows]
        med = [r["median_eps"] * factor for r in rows]
        low = [(r["ci_low_eps"] if _none(r["ci_low_eps"]) is not None else r["q1_eps"]) * factor for r in rows]
        high = [(r["ci_high_eps"] if _none(r["ci_high_eps"]) is not None else r["q3_eps"]) * factor for r in rows]
        err = [[max(0.0, m - lo) for m, lo in zip(med, low)], [max(0.0, hi - m) for m, hi in zip(med, high)]]
        y = list(range(len(rows)))[::-1]
        ax.barh(y, med, xerr=err, color=[colour(r["lang"]) for r in rows], capsize=3, error_kw={"elinewidth": 1})
        ax.set_yticks(y, labels, fontsize=10)
        for yi, m, hi in zip(y, med, high):
            if not math.isnan(m):  # beside the whisker's end, not on it
                ax.annotate(num(m), (max(m, hi), yi), xytext=(4, -3), textcoords="offset points", fontsize=9)
        ax.set_title(column_label(col, section.columns), fontsize=11)
        ax.set_xlabel(f"{unit} (higher is better)", fontsize=10)
        ax.margins(x=0.2)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{section.setup}: {section.hardware}\nmedian steady throughput, whiskers: 95 % interval of the "
                 "median (IQR where n < 6)", fontsize=10)
    fig.savefig(path)


def chart_scaling(summary, machine, hardware, device, precision, path: Path) -> bool:
    """Throughput against replica count (GPUs x nodes) for every row measured at several counts;
    False if none."""
    s = summary[(summary["machine"] == machine) & (summary["hardware"] == hardware) & (summary["device"] == device)
                & (summary["precision"] == precision)]
    # the global batch may grow with the GPU count (weak scaling): not part of a line's identity
    keys = ["lang", "framework", "backend", "compile", "version", "commit_key", "sysenv", "model", "data", "samples",
            "image_size"]
    from harness import stats

    s = s.assign(replicas=stats.replicas(s))  # GPUs x nodes
    lines = [g.sort_values("replicas") for _, g in s.groupby(keys, dropna=False) if g["replicas"].nunique() > 1]
    if not lines:
        return False
    models = list(dict.fromkeys(g["model"].iloc[0] for g in lines))
    fig = _figure(4.8 * len(models) + 0.5, 3.8)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        unit, factor = throughput(model)
        for g in (g for g in lines if g["model"].iloc[0] == model):
            x = g["replicas"].to_numpy()
            y = g["median_eps"].to_numpy() * factor
            err = [y - g["q1_eps"].to_numpy() * factor, g["q3_eps"].to_numpy() * factor - y]
            line = ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=row_name(g.iloc[0]))
            ax.plot(x, y[0] * x / x[0], ls=":", color=line[0].get_color(), alpha=0.6)
        ax.set_title(f"{model}: dotted = linear scaling")
        ax.set_xlabel("GPUs (x nodes)")
        ax.set_ylabel(f"{unit} (higher is better)")
        ax.set_xticks(sorted(s[s["model"] == model]["replicas"].unique()))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Scaling across GPU counts ({device}, {precision}), whiskers: IQR", fontsize=10)
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
            ax.bar(x, r["median_s"], yerr=err, color=colour(r["lang"]), capsize=3, width=0.8,
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
    ax.set_title(f"R/Julia vs Python on the same framework (×: time ratio to Python), whiskers: IQR\n"
                 f"{section.setup}: {section.hardware}", fontsize=9)
    fig.savefig(path)
    return True


# ---- building -------------------------------------------------------------------------------

def summarise(paths, **keys):
    """(records by run id, epoch frame, run index, summary) of the stores, with the section keys."""
    from harness import results, stats

    recs = results.read_records(paths or ["results"], **keys)
    frame = results.to_frame(recs)
    if frame.empty:
        from harness.errors import UsageError

        raise UsageError(f"no run records with epochs under {', '.join(map(str, paths))}")
    frame = frame[frame["task"] == "train"]  # --task infer rows: the Inference section (harness.inference)
    if frame.empty:
        return recs, frame, None, None
    by_id = {r["run_id"]: r for r in recs}
    envs = {r["run_id"]: sysenv(r) for r in recs}
    index = results.index(*paths, **keys)
    for f in (frame, index):
        f["hardware"] = f.apply(hardware_line, axis=1)
        f["sysenv"] = f["run_id"].map(envs)
    report_keys = tuple(dict.fromkeys(SECTION_KEYS + stats.ROW_KEYS + ("framework_version",)))
    summary = stats.summarize(frame, keys=report_keys)
    if summary.empty:
        from harness.errors import UsageError

        raise UsageError("no successful runs to report")
    ids = {k: list(dict.fromkeys(g["run_id"])) for k, g in stats.groups(frame[frame["status"] == "ok"], report_keys)}
    summary["run_ids"] = [ids.get(stats.clean_key(tuple(r[k] for k in report_keys)), [])
                          for _, r in summary.iterrows()]
    return by_id, frame, index, summary


def _inference_section(records) -> str:
    """The Inference section (harness.inference.markdown_section) of the records of --task infer."""
    from harness.inference import markdown_section

    return markdown_section(list(records.values()) if isinstance(records, dict) else records)


def build(paths, out: Path, title: str = "DL Rosetta: training time", fmt: str = "html", **keys):
    """Write the outputs of `fmt` into `out`; returns (markdown, sections)."""
    from harness.results import write_atomic

    records, frame, index, summary = summarise(paths, **keys)
    out.mkdir(parents=True, exist_ok=True)
    inference_md = _inference_section(records)
    if summary is None:  # only inference records
        if not inference_md:
            from harness.errors import UsageError

            raise UsageError("no successful runs to report")
        write_atomic(out / "table.md", inference_md)
        return inference_md, []
    sections = build_sections(frame, summary, index, records)
    if fmt in ("csv", "json", "parquet"):
        from harness import export

        export.write_summary(export.summary_table(sections), out / f"summary.{fmt}", fmt)
        return None, sections
    done_scaling = set()
    for s in sections:
        name = f"bars-{s.slug}.png"
        chart_bars(s, out / name)
        s.charts.append((name, f"{s.setup}: {s.hardware}: median steady throughput, whiskers = 95 % interval "
                               "of the median (IQR where n < 6)"))
        scaling_key = (s.key["machine"], s.key["hardware"], s.key["device"], s.key["precision"])
        if scaling_key not in done_scaling:
            done_scaling.add(scaling_key)
            name = f"scaling-{s.slug.rsplit('-x', 1)[0]}.png"
            if chart_scaling(summary, *scaling_key, out / name):
                s.charts.append((name, "throughput against the number of GPUs (weak scaling unless stated)"))
        name = f"languages-{s.slug}.png"
        if chart_languages(s, out / name):
            s.charts.append((name, "R/Julia against Python on the same framework and backend"))
    md = markdown(sections) + ("\n" + inference_md if inference_md else "")
    write_atomic(out / "table.md", md)
    if fmt == "html":
        from harness import report_page

        write_atomic(out / "index.html", report_page.page(title, sections, summary, records, out,
                                                          [str(p) for p in paths], MEANINGS))
    return md, sections


