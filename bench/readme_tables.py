"""The README's CPU tables, regenerated from a results store: every number with its interval and n,
the x PyTorch ratio with its interval, and the load during the measurement.

    python -m harness suite readme-cpu --out bench/results/<machine>-readme --resume
    .venv/bin/python bench/readme_tables.py bench/results/<machine>-readme [--readme README.md]
    python -m harness suite transformer-cpu --out bench/results/<machine>-transformer --resume
    .venv/bin/python bench/readme_tables.py bench/results/<machine>-transformer --block transformer-table \
        --min-repeats 2

--block names the README's block: `readme-tables` (default: the frameworks x models overview and
its chart) or `transformer-table` (the transformer's tokens/s, MFU, first epoch and test bits per
byte beside each row's ratio to PyTorch).

Takes the newest report section of the store (one machine, machine environment, commit and setup:
never a pool of several), refuses it when a row has fewer than --min-repeats runs (default 5), when
it holds no PyTorch row, or when its commit is "+dirty" (uncommitted changes; --allow-dirty), writes the report's PNG beside the store (<store>/report/) and
replaces the README's block between the `readme-tables` markers. Rows measured while the load
average exceeded the cores are flagged (⚑) and counted in the block's first line; --max-loaded
(default 0) refuses a headline with more of them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.readme_block import markers, replace  # noqa: E402
from harness.errors import UsageError  # noqa: E402

BEGIN, END = markers("readme-tables")


def heading(section, store: str, name: str, args: str = "") -> list[str]:
    """The block's first lines: where it came from, the machine, commit, work and load."""
    s = section.summary
    env = dict(section.environment)
    loaded = int(s["loaded"].sum())
    runs = f"{int(s['runs'].min())}" + (f"-{int(s['runs'].max())}" if s["runs"].max() != s["runs"].min() else "")
    return [
        f"{markers(name)[0]}: python bench/readme_tables.py {store}{args}; do not edit by hand -->",
        f"{section.setup} on {section.hardware}; {env.get('OS', '?')}, Python {env.get('Python', '?')}, commit "
        f"{section.key['commit_key']}; {'; '.join(section.workloads)}; {runs} interleaved runs per row, "
        f"{env.get('Runs', '')}. The machine's {section.load}" + ("." if loaded else ", no row above the cores."),
        "",
    ]


def block(section, png: str, store: str) -> str:
    """The README's overview block for one report section."""
    from harness.summary import MEANINGS

    env = dict(section.environment)
    lines = heading(section, store, "readme-tables") + [
        section.overview.markdown(),
        "",
        f"Median steady seconds per epoch with the {MEANINGS['ci']}; n = steady epochs/runs; throughput = "
        f"{MEANINGS['throughput']}; × PyTorch = {MEANINGS['x_pytorch']}. Frameworks: {env.get('Frameworks', '?')}.",
        "",
        f"![{section.setup}: median steady throughput with 95 % intervals]({png})",
        END,
    ]
    return "\n".join(lines)


def transformer_block(section, png: str, store: str) -> str:
    """The README's transformer block: per row the steady s/epoch with its interval, tokens/s, the
    ratio to PyTorch with its interval, MFU, first epoch, start-up and the test bits per byte."""
    from harness.reporting import Table
    from harness.summary import MEANINGS, ci_cell, none_if_missing, num, percent, ratio_cell, row_name, throughput

    s = section.summary[section.summary["model"] == "transformer"]
    if s.empty:
        raise UsageError(f"{section.title}: no transformer rows")
    table = Table(["Framework", "s/epoch (95 % CI where n ≥ 6), n", "tokens/s", "× PyTorch (95 % CI)", "MFU",
                   "first epoch s", "start-up s", "test bits/byte"], [], ["l"] + ["r"] * 7)
    for _, r in s.iterrows():
        ci = f" ({ci_cell(r)})" if none_if_missing(r["ci_level"]) else ""  # no interval below n = 6
        table.rows.append([row_name(r) + (" ⚑" if r["loaded"] else ""), f"{num(r['median_s'])}{ci}, n {r['n']}/{r['runs']}",
                           num(r["median_eps"] * throughput("transformer")[1]), ratio_cell(r), percent(r.get("mfu")),
                           num(r["first_epoch_s"]), num(r["startup_s"]), bits(r.get("test_bits_per_byte"))])
    env = dict(section.environment)
    lines = heading(section, store, "transformer-table", " --block transformer-table") + [
        table.markdown(),
        "",
        f"Median steady seconds per epoch; n = steady epochs/runs; tokens/s = windows/s × the context (256); × PyTorch = "
        f"{MEANINGS['x_pytorch']}; MFU = {MEANINGS['mfu']}; first epoch = {MEANINGS['first_epoch_s']}; "
        f"test bits/byte = the mean next-byte loss over every position of the test windows / ln 2, after the "
        f"same steps in every row. Frameworks: {env.get('Frameworks', '?')}.",
        markers("transformer-table")[1],
    ]
    return "\n".join(lines)


def bits(v) -> str:
    from harness.summary import none_if_missing

    return "–" if none_if_missing(v) is None else f"{v:.3f}"


BLOCKS = {"readme-tables": block, "transformer-table": transformer_block}


def regenerate(store: Path, readme: Path, min_repeats: int = 5, max_loaded: int = 0, allow_dirty: bool = False,
               name: str = "readme-tables") -> str:
    from harness.reporting import build

    out = store / "report"
    _, sections = build([store], out, fmt="md")
    cpu = [s for s in sections if s.key["device"] == "cpu"]
    if not cpu:
        raise UsageError(f"{store}: no CPU section")
    newest = max(cpu, key=lambda s: dict(s.environment).get("Runs", "").split(" from ")[-1])
    s = newest.summary
    few = s[s["runs"] < min_repeats]
    if len(few):
        raise UsageError(f"{newest.title}: {len(few)} row(s) with fewer than {min_repeats} runs "
                         f"({', '.join(sorted(set(few['label'])))}): run the suite with --repeats {min_repeats}")
    if not ((s["framework"] == "pytorch") & (s["lang"] == "python")).any():
        raise UsageError(f"{newest.title}: no PyTorch row, so no × PyTorch column")
    if str(newest.key["commit_key"]).endswith("+dirty") and not allow_dirty:
        raise UsageError(f"{newest.title}: measured from a tree with uncommitted changes; measure a commit "
                         "(or --allow-dirty)")
    if int(s["loaded"].sum()) > max_loaded:
        raise UsageError(f"{newest.title}: {int(s['loaded'].sum())} row(s) measured while the load exceeded the "
                         f"cores (more than --max-loaded {max_loaded}): measure again on a quiet machine")
    png = next(name for name, _ in newest.charts if name.startswith("bars-"))
    link = (out / png).resolve().relative_to(readme.resolve().parent) if (out / png).resolve().is_relative_to(
        readme.resolve().parent) else (out / png)
    return replace(readme, name, BLOCKS[name](newest, str(link), str(store)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("store", type=Path, help="the results store of the readme-cpu suite")
    p.add_argument("--readme", type=Path, default=REPO / "README.md", help="default: the checkout's README.md")
    p.add_argument("--min-repeats", type=int, default=5, help="fewest runs a row may have (default: 5)")
    p.add_argument("--max-loaded", type=int, default=0, help="most rows measured above the core count (default: 0)")
    p.add_argument("--allow-dirty", action="store_true", help="accept runs of a tree with uncommitted changes")
    p.add_argument("--block", choices=sorted(BLOCKS), default="readme-tables",
                   help="the README block to write (default: readme-tables)")
    args = p.parse_args(argv)
    try:
        regenerate(args.store, args.readme, args.min_repeats, args.max_loaded, args.allow_dirty, args.block)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.readme}: the {args.block} block regenerated from {args.store}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
