"""The README's bindings block, regenerated from results stores (harness/bindings.py).

    python -m harness suite all-languages --out bench/results/<machine>-bindings --resume
    python -m harness suite binding-overhead --out bench/results/<machine>-overhead --resume
    python -m harness suite binding-crossing --out bench/results/<machine>-crossing --resume
    python -m harness suite r-variants --out bench/results/<machine>-r-variants --resume
    .venv/bin/python bench/bindings_table.py --table bench/results/<machine>-bindings \\
        --overhead bench/results/<machine>-overhead --overhead bench/results/<machine>-crossing \\
        --variants bench/results/<machine>-r-variants

--table gives the bindings table (each language's s/epoch, × Python, first epoch, start-up, hand-off,
final loss), --overhead the per-step overhead fits (step = a + b·batch; repeatable: each store's
batch sizes fitted apart), --variants the R data paths and loops (their table and fits). Each store
must hold one section (machine, environment, commit, setup; --commit picks one), every table row
--min-repeats runs (default 5), no row measured while the load exceeded the cores (--max-loaded,
default 0), and no "+dirty" commit (--allow-dirty). Replaces the README's block between the
`bindings-table` markers; its first line is the command that wrote it, these options included.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.readme_block import markers, replace  # noqa: E402
from harness.errors import UsageError  # noqa: E402

BEGIN, END = markers("bindings-table")


def _one_section(frame, store, what: str):
    from harness import bindings

    keys = {tuple(r) for r in frame[list(bindings.SECTION)].astype(str).itertuples(index=False)}
    if len(keys) > 1:
        commits = sorted({k[bindings.SECTION.index("commit_key")] for k in keys})
        raise UsageError(f"{store}: {what} holds {len(keys)} sections (commits {', '.join(commits)}): pass --commit")
    return frame


def part(store: Path, commit: str | None, min_repeats: int, max_loaded: int, allow_dirty: bool,
         what: str, fits_only: bool = False) -> str:
    """The Markdown of one store: its bindings table (unless fits_only) and its overhead fits."""
    from harness import bindings, results

    records = results.read_records([store], commit=commit)
    rows, fits = bindings.table(records), bindings.overhead(records)
    if fits_only:
        rows = rows.iloc[0:0]
        if fits.empty:
            raise UsageError(f"{store}: no line with runs at two or more batch sizes beside Python's: run "
                             "bench/suites/binding-overhead.toml into it")
    elif rows.empty:
        raise UsageError(f"{store}: no framework with runs in Python and another language: run "
                         "bench/suites/all-languages.toml into it")
    for frame in (rows, fits):
        if not frame.empty:
            _one_section(frame, store, what)
            if any(str(c).endswith("+dirty") for c in frame["commit_key"]) and not allow_dirty:
                raise UsageError(f"{store}: measured from a tree with uncommitted changes; measure a commit "
                                 "(or --allow-dirty)")
    loaded = sum(int(f["loaded"].sum()) for f in (rows, fits) if not f.empty)
    if loaded > max_loaded:
        raise UsageError(f"{store}: {loaded} row(s) measured while the load exceeded the cores (more than "
                         f"--max-loaded {max_loaded}): measure again on a quiet machine")
    if not rows.empty:
        few = rows[rows["runs"] < min_repeats]
        if len(few):
            raise UsageError(f"{store}: {len(few)} row(s) with fewer than {min_repeats} runs "
                             f"({', '.join(sorted(set(few['label'])))}): run the suite with --repeats {min_repeats}")
    return bindings.markdown(rows, fits)


def regenerate(readme: Path, table: Path, overheads: Sequence[Path] = (), variants: Path | None = None,
               commit: str | None = None, min_repeats: int = 5, max_loaded: int = 0, allow_dirty: bool = False) -> str:
    """The block from the stores; each of `overheads` (e.g. binding-overhead's batch 16-256 and
    binding-crossing's batch 1-16) is fitted apart."""
    parts = [part(table, commit, min_repeats, max_loaded, allow_dirty, "--table")]
    for store in overheads:
        parts.append(part(store, commit, min_repeats, max_loaded, allow_dirty, "--overhead", fits_only=True))
    if variants is not None:
        parts.append(part(variants, commit, min(min_repeats, 3), max_loaded, allow_dirty, "--variants"))
    command = " ".join(["python bench/bindings_table.py", f"--table {table}"] + [f"--overhead {o}" for o in overheads]
                       + ([f"--variants {variants}"] if variants else []) + ([f"--commit {commit}"] if commit else [])
                       + ([f"--min-repeats {min_repeats}"] if min_repeats != 5 else [])
                       + ([f"--max-loaded {max_loaded}"] if max_loaded else []) + (["--allow-dirty"] if allow_dirty else []))
    return replace(readme, "bindings-table", "\n".join([f"{BEGIN}: {command}; do not edit by hand -->", "", *parts, END]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--table", type=Path, required=True, help="the store of the all-languages suite")
    p.add_argument("--overhead", type=Path, action="append", help="the store of the binding-overhead suite (or of "
                   "binding-crossing: batch 1-16); repeatable, each store fitted apart")
    p.add_argument("--variants", type=Path, help="the store of the r-variants suite")
    p.add_argument("--commit", help="only runs of this commit (a prefix of the commit key)")
    p.add_argument("--readme", type=Path, default=REPO / "README.md", help="default: the checkout's README.md")
    p.add_argument("--min-repeats", type=int, default=5, help="fewest runs a table row may have (default: 5; "
                   "the variants' rows: at most 3)")
    p.add_argument("--max-loaded", type=int, default=0, help="most rows measured above the core count (default: 0)")
    p.add_argument("--allow-dirty", action="store_true", help="accept runs of a tree with uncommitted changes")
    args = p.parse_args(argv)
    try:
        regenerate(args.readme, args.table, args.overhead or (), args.variants, args.commit, args.min_repeats,
                   args.max_loaded, args.allow_dirty)
    except (UsageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.readme}: the bindings-table block regenerated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
