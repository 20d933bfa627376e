"""`python -m harness list`: every registered implementation and whether it can run here."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--lang", help="only this language")
    p.add_argument("--model", help="only this model")
    p.add_argument("--format", default="table", choices=("table", "json"))


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

    table = rows(args.lang, args.model)
    if args.format == "json":
        print(json.dumps(table, indent=1))
        return 0
    columns = list(table[0]) if table else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in table)) for c in columns[:-1]}  # the reason runs free
    print("  ".join(c.ljust(widths.get(c, 0)) for c in columns).rstrip())
    for r in table:
        print("  ".join(str(r[c]).ljust(widths.get(c, 0)) for c in columns).rstrip())
    return 0
