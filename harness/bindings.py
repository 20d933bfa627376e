"""Language bindings side by side: one framework driven from Python and from another language.

A binding is a framework reached from a language other than Python: R Keras (`r_models/`, R
embedded by rpy2, Keras reached through reticulate) drives Python's Keras; C++ LibTorch
(`cpp_models/`) drives the library under PyTorch. The registry says which Python framework a
binding drives (`Framework.binds`, by default its own name): that is the row's *family*. From a
results store this module makes two tidy tables (pandas DataFrames, one row per line):

    table(records)     per section x family x backend x workload x language (x --variant): steady
                       s/epoch with its interval over runs, the ratio to Python with its interval,
                       first epoch, start-up taken apart (spawn, the language runtime, framework
                       attach, compile, build), data hand-off, final loss against Python's
    overhead(records)  per section x family x backend x model x language (x variant), over batch
                       sizes: step time = a + b * batch, with intervals, and a's difference from
                       Python's (the binding's cost per step) and from the language's default variant

Sections are the report's (harness.reporting): one machine, machine environment, commit and
device setup; nothing is pooled across them.

Samples. A run (one fresh worker process) is one sample: its steady s/epoch is the median of its
steady epochs (every epoch after the first). Epochs of one process share that process's state
(allocation, thread placement), so the run, not the epoch, is the unit of replication here.

Intervals (level 95 %). Times are positive and skewed and a ratio is symmetric on the log scale,
so both work on logs:
  * a language's s/epoch: the geometric mean over runs with the Student t interval of the mean
    log (scipy.stats.ttest_1samp(...).confidence_interval(), n - 1 degrees of freedom);
  * the ratio to Python (above 1: slower than Python): paired by repeat index where both sides
    have one run for each of the same repeats (a suite interleaves its rows, so repeat r of both
    ran back to back and the machine's drift cancels): the geometric mean of the per-repeat
    ratios with the t interval of the mean log ratio; otherwise Welch's interval for the
    difference of the mean logs (scipy.stats.ttest_ind(equal_var=False)). `ratio_method` says which.
A t interval rather than a bootstrap: with 5 runs a side a percentile bootstrap (scipy.stats.
bootstrap) covers about 84 % where it claims 95 % (simulated, normal and log-normal runs), the t
interval about 95 %. Fewer than 2 runs give no interval (NaN).

Per-step overhead. A run's step time is its steady s/epoch over its steps per epoch; across runs
at several batch sizes, scipy.stats.linregress fits step = a + b * batch: `a` is what every step
costs whatever its size (the language crossing, the framework's dispatch, the optimiser update),
`b` what each example adds. Intervals: intercept and slope +- t(n - 2) standard errors. The
difference of two lines' `a` (independent fits): its standard error is the root of the summed
squares, with Welch-Satterthwaite degrees of freedom.

Final loss. The last epoch's mean loss, median over runs, against Python's: they agree when
|loss - Python's| <= max(LOSS_RTOL x Python's, LOSS_ATOL). The equivalence checks (`check`)
prove the two are the same model on the same weights; this only says that the trained runs end
alike (initial weights may be drawn differently by each language's generator).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

LEVEL = 0.95
LOSS_RTOL = 0.05  # final losses agree within 5 % of Python's ...
LOSS_ATOL = 0.01  # ... or 0.01 nats, whichever is larger (synthetic data trains to losses near 0)

SECTION = ("machine", "hardware", "sysenv", "commit_key", "device", "gpus", "nodes", "precision")
FAMILY = ("family", "backend", "compile")  # a framework and its bindings
WORKLOAD = ("model", "data", "samples", "batch_size", "image_size")
LANGUAGE = ("lang", "framework", "variant")  # one line of the table


# ---- intervals ------------------------------------------------------------------------------

def _nan3():
    return math.nan, math.nan, math.nan


def geometric_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(geometric mean, low, high): the t interval of the mean log, exponentiated; NaN interval below 2 values."""
    from scipy import stats

    x = np.log(np.asarray([v for v in values if v is not None and np.isfinite(v) and v > 0], dtype=float))
    if len(x) == 0:
        return _nan3()
    centre = float(np.exp(x.mean()))
    if len(x) < 2:
        return centre, math.nan, math.nan
    if np.ptp(x) == 0:
        return centre, centre, centre
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(level)
    return centre, float(np.exp(ci.low)), float(np.exp(ci.high))


def ratio_interval(new: dict, base: dict, level: float = LEVEL) -> tuple[float, float, float, str]:
    """(ratio, low, high, method) of geometric means new / base. `new` and `base` map a repeat index
    to that run's value; paired by repeat when both have the same repeats (one run each, >= 2)."""
    from scipy import stats

    a = {k: v for k, v in new.items() if v is not None and np.isfinite(v) and v > 0}
    b = {k: v for k, v in base.items() if v is not None and np.isfinite(v) and v > 0}
    if not a or not b:
        return math.nan, math.nan, math.nan, ""
    if set(a) == set(b) and len(a) >= 2:
        d = np.log([a[k] / b[k] for k in sorted(a)])
        centre = float(np.exp(d.mean()))
        if np.ptp(d) == 0:
            return centre, centre, centre, "paired"
        ci = stats.ttest_1samp(d, 0.0).confidence_interval(level)
        return centre, float(np.exp(ci.low)), float(np.exp(ci.high)), "paired"
    la, lb = np.log(list(a.values())), np.log(list(b.values()))
    centre = float(np.exp(la.mean() - lb.mean()))
    if min(len(la), len(lb)) < 2:
        return centre, math.nan, math.nan, "unpaired"
    if np.ptp(la) == 0 and np.ptp(lb) == 0:
        return centre, centre, centre, "unpaired"
    ci = stats.ttest_ind(la, lb, equal_var=False).confidence_interval(level)
    return centre, float(np.exp(ci.low)), float(np.exp(ci.high)), "unpaired"


def difference_interval(a: float, se_a: float, df_a: int, b: float, se_b: float, df_b: int,
                        level: float = LEVEL) -> tuple[float, float, float]:
    """(a - b, low, high) for two independent estimates with standard errors and degrees of freedom
    (Welch-Satterthwaite)."""
    from scipy import stats

    d = a - b
    var = se_a ** 2 + se_b ** 2
    if not np.isfinite(var) or df_a < 1 or df_b < 1:
        return d, math.nan, math.nan
    if var == 0:
        return d, d, d
    df = var ** 2 / ((se_a ** 4) / df_a + (se_b ** 4) / df_b)
    half = stats.t.ppf((1 + level) / 2, df) * math.sqrt(var)
    return d, d - half, d + half


# ---- the runs -------------------------------------------------------------------------------

def _none(v):
    """None for pandas' missing values (NaN), else the value."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _groups(frame, names):
    """(clean key, sub-frame) per group, missing values a group of their own (harness.stats.groups)."""
    from harness.stats import groups

    return groups(frame, names)


def family_of(lang: str, framework: str) -> str:
    """The Python framework a row drives: Framework.binds, or its own name."""
    from harness.registry import framework as find

    fw = find(lang, framework)
    return (fw.binds if fw is not None and fw.binds else framework)


def runs(records):
    """One row per successful run: its keys (section, family, workload, language) and its numbers."""
    import pandas as pd

    from harness import results
    from harness.reporting import hardware_line, sysenv

    ok = [r for r in records if r.get("status") == "ok" and len(r.get("epochs") or []) >= 2]
    frame = results.to_frame(ok)
    if frame.empty:
        return pd.DataFrame()
    by_id = {r["run_id"]: r for r in ok}
    rows = []
    for run_id, g in frame.groupby("run_id", sort=False):
        first = g.iloc[0]
        rec = by_id[run_id]
        timing, info = rec.get("timing") or {}, rec.get("info") or {}
        steady = g[~g["warmup"].astype(bool)]
        r_facts = info.get("r") or {}
        compiled = info.get("compile") or {}
        keys = {k: _none(first[k]) for k in ("machine", "commit_key", "device", "gpus", "nodes", "precision",
                                             "backend", "compile", "lang", "framework", "variant", "label", "model",
                                             "data", "samples", "batch_size", "image_size", "repeat", "cores",
                                             "load_1m")}
        runtime = None  # the language runtime's own start inside the worker, part of the import
        if r_facts:
            runtime = (r_facts.get("r_start_s") or 0.0) + (r_facts.get("reticulate_s") or 0.0)
        elif compiled:
            runtime = compiled.get("load_s")
        attach = timing.get("import_s")
        if attach is not None and runtime is not None:
            attach -= runtime
        handoff = timing.get("data_s")  # less the R runtime's own heap probes (two full gc), not the hand-off's
        if handoff is not None:
            handoff -= (r_facts.get("handoff") or {}).get("probe_s") or 0.0
        steady_s = float(steady["seconds"].median())
        steps = int(steady["steps"].iloc[0])
        rows.append({
            **keys, "run_id": run_id, "hardware": hardware_line(first), "sysenv": sysenv(rec),
            "family": family_of(first["lang"], first["framework"]),
            "version": (rec.get("impl") or {}).get("version"),
            "steady_s": steady_s, "steps": steps, "step_s": steady_s / steps,
            "first_epoch_s": float(g[g["warmup"].astype(bool)]["seconds"].iloc[0]),
            "spawn_s": timing.get("startup_s"), "runtime_s": runtime, "attach_s": attach,
            "import_s": timing.get("import_s"), "compile_s": timing.get("compile_s"), "build_s": timing.get("build_s"),
            "handoff_s": handoff,
            "final_loss": (rec.get("metrics") or {}).get("final_loss"),
            "test_accuracy": (rec.get("metrics") or {}).get("test_accuracy"),
        })
    out = pd.DataFrame(rows)
    out["startup_s"] = out[["spawn_s", "import_s", "build_s"]].sum(axis=1, min_count=1)  # the summary's start-up
    return out


def _median(series) -> float:
    values = series.dropna()
    return float(values.median()) if len(values) else math.nan


def _per_repeat(g, column: str = "steady_s") -> dict:
    """{repeat: value}; a repeat with several runs (two stores merged) keeps their median."""
    return {int(k): float(v[column].median()) for k, v in g.groupby("repeat")}


def _multilingual(frame):
    """The rows of groups (section, family, workload) that hold Python and another language."""
    import pandas as pd

    keep = [g for _, g in _groups(frame, list(SECTION + FAMILY + WORKLOAD))
            if (g["lang"] == "python").any() and (g["lang"] != "python").any()]
    return pd.concat(keep) if keep else frame.iloc[0:0]


def _load(runs) -> dict:
    """The highest 1-minute load average before any of these runs, and whether it exceeded the cores."""
    load = float(runs["load_1m"].max()) if runs["load_1m"].notna().any() else math.nan
    cores = runs["cores"].dropna()
    return {"load_max": load, "loaded": bool(len(cores) and load > cores.iloc[0])}


def _is_reference(key) -> bool:
    """Python's own framework, trained its default way: the row the others are compared with."""
    return key["lang"] == "python" and key["framework"] == key["family"] and _none(key["variant"]) is None


# ---- the bindings table ---------------------------------------------------------------------

def table(records, level: float = LEVEL):
    """The bindings table (see the module's docstring): one row per language (and variant) of every
    framework that has Python and at least one other language in the same section and workload."""
    import pandas as pd

    frame = runs(records)
    if frame.empty:
        return pd.DataFrame()
    frame = _multilingual(frame)
    if frame.empty:
        return pd.DataFrame()
    out = []
    for gkey, g in _groups(frame, list(SECTION + FAMILY + WORKLOAD)):
        group = dict(zip(SECTION + FAMILY + WORKLOAD, gkey))
        lines = {k: sub for k, sub in _groups(g, list(LANGUAGE))}
        python = next((sub for k, sub in lines.items() if _is_reference({**group, **dict(zip(LANGUAGE, k))})), None)
        for lkey, sub in lines.items():
            line = {**group, **dict(zip(LANGUAGE, lkey))}
            s, s_low, s_high = geometric_interval(sub["steady_s"], level)
            row = {**line, "label": sub["label"].iloc[0], "version": sub["version"].dropna().iloc[0]
                   if sub["version"].notna().any() else None, "runs": len(sub),
                   "steady_s": s, "steady_low": s_low, "steady_high": s_high}
            ref = python
            if _is_reference(line) or ref is None:
                row.update(ratio=1.0 if ref is not None else math.nan, ratio_low=math.nan, ratio_high=math.nan,
                           ratio_method="reference" if ref is not None else "")
            else:
                ratio = ratio_interval(_per_repeat(sub), _per_repeat(ref), level)
                row.update(zip(("ratio", "ratio_low", "ratio_high", "ratio_method"), ratio))
            default = None
            if line["variant"] is not None:  # against the same language's default way of training
                default = next((d for k, d in lines.items() if k[0] == line["lang"] and k[1] == line["framework"]
                                and k[2] is None), None)
            vs = ratio_interval(_per_repeat(sub), _per_repeat(default), level) if default is not None else (
                math.nan, math.nan, math.nan, "")
            row.update(zip(("vs_default", "vs_default_low", "vs_default_high"), vs[:3]))
            for col in ("first_epoch_s", "spawn_s", "runtime_s", "attach_s", "import_s", "compile_s", "build_s",
                        "startup_s", "handoff_s", "final_loss", "test_accuracy"):
                row[col] = _median(sub[col])
            ref_loss = _median(ref["final_loss"]) if ref is not None else math.nan
            row["final_loss_python"] = ref_loss
            row["loss_diff"] = (row["final_loss"] - ref_loss) / ref_loss if ref_loss else math.nan
            row["loss_agrees"] = (bool(abs(row["final_loss"] - ref_loss) <= max(LOSS_RTOL * ref_loss, LOSS_ATOL))
                                  if np.isfinite(ref_loss) and np.isfinite(row["final_loss"]) else None)
            row.update(_load(sub))
            out.append(row)
    return _sorted(pd.DataFrame(out))


def _sorted(frame):
    """Sections, then families, backends and workloads; within one, Python first, then the registry's
    languages, a language's default before its variants."""
    from harness.registry import LANGS

    if frame.empty:
        return frame

    def key(r):
        return (str(tuple(_none(r[k]) for k in SECTION)), r["family"], str(_none(r["backend"])), r["model"],
                str(r["data"]), _none(r["samples"]) or 0, _none(r.get("batch_size")) or 0, _none(r["image_size"]) or 0,
                LANGS.index(r["lang"]) if r["lang"] in LANGS else 9, r["framework"], _none(r["variant"]) or "")

    order = frame.apply(key, axis=1)
    return frame.loc[sorted(frame.index, key=lambda i: order[i])].reset_index(drop=True)


# ---- per-step overhead: step = a + b * batch -------------------------------------------------

def _line_fit(batch, step):
    """linregress of step on batch: (intercept, its standard error, slope, its standard error, r², df)."""
    from scipy import stats

    fit = stats.linregress(np.asarray(batch, dtype=float), np.asarray(step, dtype=float))
    return fit.intercept, fit.intercept_stderr, fit.slope, fit.stderr, fit.rvalue ** 2, len(step) - 2


def _a_difference(sub, ref, fit_sub, fit_ref, level: float) -> tuple[float, float, float, str]:
    """(a - a_ref, low, high, method) in µs. Paired where every (batch, repeat) has one run on each
    side: the per-pair step time differences regressed on batch (the common drift of runs that ran
    back to back cancels); otherwise the two fits' intercepts, Welch-Satterthwaite."""
    from scipy import stats

    mine = {(int(b), int(r)): v for b, r, v in zip(sub["batch_size"], sub["repeat"], sub["step_s"])}
    theirs = {(int(b), int(r)): v for b, r, v in zip(ref["batch_size"], ref["repeat"], ref["step_s"])}
    pairs = sorted(mine)
    if (set(mine) == set(theirs) and len(mine) == len(sub) == len(ref) and len(pairs) >= 3
            and len({b for b, _ in pairs}) >= 2):
        d, se, _, _, _, df = _line_fit([b for b, _ in pairs], [mine[k] - theirs[k] for k in pairs])
        half = stats.t.ppf((1 + level) / 2, df) * se * 1e6 if se > 0 else 0.0
        return d * 1e6, d * 1e6 - half, d * 1e6 + half, "paired"
    a, se_a, *_, df_a = fit_sub
    b, se_b, *_, df_b = fit_ref
    return (*difference_interval(a * 1e6, se_a * 1e6, df_a, b * 1e6, se_b * 1e6, df_b, level), "unpaired")


def overhead(records, level: float = LEVEL):
    """a (per step) and b (per example) of step time = a + b * batch for each language, from runs at
    two or more batch sizes (three runs at least), with a's difference from Python's and from the
    language's default variant. Times in microseconds."""
    import pandas as pd
    from scipy import stats

    frame = runs(records)
    if frame.empty:
        return pd.DataFrame()
    names = list(SECTION + FAMILY + ("model", "data", "samples", "image_size"))
    out = []
    for gkey, g in _groups(frame, names):
        group = dict(zip(names, gkey))
        lines = {}
        for lkey, sub in _groups(g, list(LANGUAGE)):
            if sub["batch_size"].nunique() >= 2 and len(sub) >= 3:
                lines[lkey] = (sub, _line_fit(sub["batch_size"], sub["step_s"]))
        ref = next((k for k in lines if _is_reference({**group, **dict(zip(LANGUAGE, k))})), None)
        if ref is None or all(k[0] == "python" for k in lines):
            continue  # as in the table: only beside Python's own line
        for lkey, (sub, fit) in lines.items():
            a, se_a, b, se_b, r2, df = fit
            t = stats.t.ppf((1 + level) / 2, df)
            row = {**group, **dict(zip(LANGUAGE, lkey)), "label": sub["label"].iloc[0], "runs": len(sub),
                   "batches": ", ".join(str(int(x)) for x in sorted(sub["batch_size"].unique())),
                   "a_us": a * 1e6, "a_low_us": (a - t * se_a) * 1e6, "a_high_us": (a + t * se_a) * 1e6,
                   "b_us": b * 1e6, "b_low_us": (b - t * se_b) * 1e6, "b_high_us": (b + t * se_b) * 1e6, "r2": r2,
                   **_load(sub)}
            nan4 = (math.nan, math.nan, math.nan, "")
            vs_python = nan4 if lkey == ref else _a_difference(sub, lines[ref][0], fit, lines[ref][1], level)
            default = (lkey[0], lkey[1], None)
            vs_default = (_a_difference(sub, lines[default][0], fit, lines[default][1], level)
                          if lkey[2] is not None and default in lines else nan4)
            row.update(zip(("da_us", "da_low_us", "da_high_us", "da_method"), vs_python))
            row.update(zip(("da_default_us", "da_default_low_us", "da_default_high_us", "da_default_method"),
                           vs_default))
            out.append(row)
    return _sorted(pd.DataFrame(out))


# ---- text -----------------------------------------------------------------------------------

def line_name(r) -> str:
    """e.g. 'Python Keras (TF)', 'R Keras (TF)', 'C++ LibTorch', 'R Keras (TF), loop=train_on_batch'."""
    from harness.registry import BACKEND_NAMES, display_name

    name = ("Python " if r["lang"] == "python" else "") + display_name(r["lang"], r["framework"])
    if isinstance(r.get("backend"), str):
        name += f" ({BACKEND_NAMES.get(r['backend'], r['backend'])})"
    if isinstance(r.get("variant"), str):
        name += f", {r['variant']}"
    return name


def _ci(v, low, high, fmt) -> str:
    from harness.summary import none_if_missing

    if none_if_missing(v) is None:
        return "–"
    if none_if_missing(low) is None or none_if_missing(high) is None:
        return fmt(v)
    return f"{fmt(v)} ({fmt(low)}–{fmt(high)})"


def _sections(frame):
    for key, g in _groups(frame, list(SECTION)):
        yield dict(zip(SECTION, key)), g


def _title(key: dict) -> str:
    setup = f"{key['device'].upper()}" + (f", {key['gpus']} GPU(s)" if key["device"] != "cpu" else "") + \
        (f", {key['nodes']} nodes" if key["nodes"] and key["nodes"] > 1 else "")
    return f"{setup}, {key['precision']}: {key['hardware']} · commit {key['commit_key']}"


def markdown(bindings, fits=None) -> str:
    """Both tables as Markdown, one heading per section."""
    from harness.reporting import Table
    from harness.summary import num

    def ratio(v):
        return f"{v:.3f}" if abs(v) < 10 else num(v)

    out = []
    for key, g in _sections(bindings):
        rows = []
        for _, r in g.iterrows():
            loss = "–" if r["loss_agrees"] is None else (
                f"{num(r['final_loss'])} ({r['loss_diff']:+.1%}, " + ("agrees" if r["loss_agrees"] else "differs") + ")"
                if not _is_reference(r) else num(r["final_loss"]))
            start = " / ".join(num(r[c]) for c in ("spawn_s", "runtime_s", "attach_s", "compile_s", "build_s"))
            vs = _ci(r["vs_default"], r["vs_default_low"], r["vs_default_high"], ratio)
            rows.append([line_name(r) + (" ⚑" if r["loaded"] else ""), r["model"], str(int(r["batch_size"])),
                         _ci(r["steady_s"], r["steady_low"], r["steady_high"], num),
                         _ci(r["ratio"], r["ratio_low"], r["ratio_high"], ratio) if not _is_reference(r) else "1",
                         vs, num(r["first_epoch_s"]), start, num(r["handoff_s"]), loss, str(int(r["runs"]))])
        t = Table(["Binding", "model", "batch", "s/epoch (95 % CI)", "× Python (95 % CI)",
                   "× its default (95 % CI)", "first epoch s", "start-up s: spawn / runtime / attach / compile / build",
                   "hand-off s", "final loss (vs Python)", "runs"], rows, ["l", "l"] + ["r"] * 9)
        out += [f"#### Bindings: {_title(key)}", "", t.markdown(), ""]
    if fits is not None and not fits.empty:
        for key, g in _sections(fits):
            rows = []
            for _, r in g.iterrows():
                rows.append([line_name(r) + (" ⚑" if r["loaded"] else ""), r["model"],
                             _ci(r["a_us"], r["a_low_us"], r["a_high_us"], num),
                             _ci(r["b_us"], r["b_low_us"], r["b_high_us"], num),
                             "–" if _is_reference(r) else _ci(r["da_us"], r["da_low_us"], r["da_high_us"], num),
                             _ci(r["da_default_us"], r["da_default_low_us"], r["da_default_high_us"], num),
                             f"{r['r2']:.3f}", f"{int(r['runs'])} ({r['batches']})"])
            t = Table(["Binding", "model", "a µs/step (95 % CI)", "b µs/example (95 % CI)", "a − Python's a µs",
                       "a − its default's a µs", "R²", "runs (batches)"], rows, ["l", "l"] + ["r"] * 6)
            out += [f"#### Per-step overhead, step = a + b·batch: {_title(key)}", "", t.markdown(), ""]
    if out:
        out += [NOTE, ""]
    return "\n".join(out)


NOTE = ("s/epoch: geometric mean over runs (each run: the median of its steady epochs) with the 95 % t interval "
        "over runs; × Python: the ratio of this row's s/epoch to Python's (above 1: slower), paired by repeat "
        "where the runs pair, with its 95 % t interval on the log scale; × its default: a --variant against the "
        "same language's default way; start-up: process spawn / the language runtime inside the worker (R and "
        "reticulate; the C++ extension's load) / framework attach (the rest of the import) / C++ compile (cached: "
        "~0) / model build, medians; hand-off: the data handed to the implementation (its layout and fit_data, "
        f"outside the clock); final loss agrees within "
        f"{LOSS_RTOL:.0%} of Python's (or {LOSS_ATOL} nats). a, b: scipy.stats.linregress of step time on "
        "batch size over runs, 95 % t intervals; a's differences from the per-(batch, repeat) differences of "
        "interleaved runs regressed on batch (paired), else Welch-Satterthwaite.")


def report(paths, out: Path, level: float = LEVEL, **keys) -> str:
    """The bindings tables of the stores under `paths` as Markdown ('' when no framework has two
    languages there); writes OUT/bindings.md, bindings.csv and bindings-overhead.csv when it has rows."""
    from harness import results
    from harness.results import write_atomic

    records = results.read_records(paths, **keys)
    rows, fits = table(records, level), overhead(records, level)
    if rows.empty and fits.empty:
        return ""
    md = markdown(rows, fits)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "bindings.md", md)
    if not rows.empty:
        write_atomic(out / "bindings.csv", rows.to_csv(index=False))
    if not fits.empty:
        write_atomic(out / "bindings-overhead.csv", fits.to_csv(index=False))
    return md
