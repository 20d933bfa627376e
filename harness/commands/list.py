"""`python -m harness list`: every registered implementation and whether it can run here."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--lang", help="only this language")
    p.add_argument("--model", help="only this model")
    p.add_argument("--format", default="table", choices=("table", "json"))
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

    table = export_rows(args.lang, args.model) if args.exports else rows(args.lang, args.model)
    if args.format == "json":
        print(json.dumps(table, indent=1))
        return 0
    columns = list(table[0]) if table else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in table)) for c in columns[:-1]}  # the reason runs free
    print("  ".join(c.ljust(widths.get(c, 0)) for c in columns).rstrip())
    for r in table:
        print("  ".join(str(r[c]).ljust(widths.get(c, 0)) for c in columns).rstrip())
    return 0
