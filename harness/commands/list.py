"""`python -m harness list`: every registered implementation, its setups, and whether it can run here (and\nwhy not, with the fix, where it cannot)."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--lang", help="only this language: python, r or julia")
    p.add_argument("--model", help="only this model: cnn, resnet50 or rnn")
    p.add_argument("--format", default="table", choices=("table", "json"),
                   help="table: a table that fits the terminal; json: one JSON object per implementation "
                        "(default: %(default)s)")
    p.add_argument("--exports", action="store_true", help="one row per implementation x export path: the "
                   "exporter, the runtimes that read its file here, and why not where not")


def rows(lang=None, model=None) -> list[dict]:
    from harness import parallel, runtimes
    from harness.registry import select

    out = []
    for impl in select(lang=lang, model=model, include_retired=True):
        reason = runtimes.availability(impl)
        out.append({"lang": impl.lang, "framework": impl.name, "backend": impl.backend or "", "model": impl.model,
                    "env": impl.framework.env, "setups": parallel.supported_setups(impl),
                    "exports": ", ".join(dict.fromkeys(e.format for e in impl.exports)) or "none",
                    "runnable": "yes" if reason is None else "no",
                    "reason": reason or ""})
    return out


def export_rows(lang=None, model=None) -> list[dict]:
    """Per implementation and export path: the exporter, and each runtime that reads the format here
    or why not (not installed: its install command; the exporter's module missing: the fix)."""
    from harness import inference
    from harness.registry import select

    deploy = inference.deploy_api()
    out = []
    for impl in select(lang=lang, model=model, include_retired=False):
        if not impl.exports:
            out.append({"implementation": impl.label, "format": "-", "exporter": "-", "runtimes": "native",
                        "why not": impl.no_export()})
            continue
        for e in impl.exports:
            problem = inference.export_problem(impl, e)
            here, why = [], []
            for name, rt in deploy.RUNTIMES.items():
                if e.format not in rt.formats:
                    continue
                reason = deploy.availability(name)
                (why if reason else here).append(f"{name}: {reason}" if reason else name)
            out.append({"implementation": impl.label, "format": e.format, "exporter": e.exporter,
                        "runtimes": ", ".join(["native", *here]) if not problem else "native",
                        "why not": "; ".join(([problem] if problem else []) + why + ([e.note] if e.note else []))})
    return out


def main(args) -> int:
    import json

    from rich import box
    from rich.table import Table

    from harness.summary import render, row

    table = export_rows(args.lang, args.model) if args.exports else rows(args.lang, args.model)
    if args.format == "json":
        print(json.dumps(table, indent=1))
        return 0
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    if args.exports:
        for column in ("implementation", "format", "exporter", "runtimes", "why not"):
            t.add_column(column, overflow="fold", ratio=3 if column == "why not" else None)
        for r in table:
            t.add_row(*row(*r.values()))
        print(render(t, fit=True))
        return 0
    for column in ("implementation", "models", "env", "setups", "exports", "runs here"):
        t.add_column(column, overflow="fold", ratio=3 if column == "runs here" else None,
                     no_wrap=column in ("implementation", "env"))
    grouped = {}  # one line per framework[backend] whose models share env, setups and answer
    for r in table:
        label = f"{r['lang']}/{r['framework']}" + (f"[{r['backend']}]" if r["backend"] else "")
        answer = "yes" if r["runnable"] == "yes" else f"no: {r['reason']}"
        grouped.setdefault((label, r["env"], r["setups"], r["exports"], answer), []).append(r["model"])
    for (label, env, setups, exports, answer), models in grouped.items():
        t.add_row(*row(label, " ".join(models), env, setups, exports, answer))
    print(render(t, fit=True))
    return 0
