"""`python -m harness list`: every registered implementation, its setups, and whether it can run here (and\nwhy not, with the fix, where it cannot)."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--lang", help="only this language: python, r or julia")
    p.add_argument("--model", help="only this model: cnn, resnet50 or rnn")
    p.add_argument("--format", default="table", choices=("table", "json"),
                   help="table: a table that fits the terminal; json: one JSON object per implementation "
                        "(default: %(default)s)")


def rows(lang=None, model=None) -> list[dict]:
    from harness import parallel, runtimes
    from harness.registry import select

    out = []
    for impl in select(lang=lang, model=model, include_retired=True):
        reason = runtimes.availability(impl)
        out.append({"lang": impl.lang, "framework": impl.name, "backend": impl.backend or "", "model": impl.model,
                    "env": impl.framework.env, "setups": parallel.supported_setups(impl),
                    "runnable": "yes" if reason is None else "no",
                    "reason": reason or ""})
    return out


def main(args) -> int:
    import json

    from rich import box
    from rich.table import Table

    from harness.summary import render, row

    table = rows(args.lang, args.model)
    if args.format == "json":
        print(json.dumps(table, indent=1))
        return 0
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("implementation", "models", "env", "setups", "runs here"):
        t.add_column(column, overflow="fold", ratio=3 if column == "runs here" else None,
                     no_wrap=column in ("implementation", "env"))
    grouped = {}  # one line per framework[backend] whose models share env, setups and answer
    for r in table:
        label = f"{r['lang']}/{r['framework']}" + (f"[{r['backend']}]" if r["backend"] else "")
        answer = "yes" if r["runnable"] == "yes" else f"no: {r['reason']}"
        grouped.setdefault((label, r["env"], r["setups"], answer), []).append(r["model"])
    for (label, env, setups, answer), models in grouped.items():
        t.add_row(*row(label, " ".join(models), env, setups, answer))
    print(render(t, fit=True))
    return 0
