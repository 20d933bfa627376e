"""The harness's seams: imports point one way, and records keep their shape across restructurings.

The import graph is read from the source with `ast` (nothing is imported, no framework needed):
every `import`/`from ... import` of a harness module, at module level or inside a function, is an
edge. No cycle may exist among harness's modules, and no command module may import another
(commands parse arguments and call the library; shared option definitions live in
harness/cli_options.py).
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

import fake_records
from conftest import REPO, harness_json

PACKAGE = REPO / "harness"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str, root: Path) -> bool:
    path = root / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_of(path: Path, root: Path) -> set[str]:
    """The harness modules `path` imports (a `from harness.x import y` names harness.x.y if y is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "harness"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "harness":
            found = [f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}", root)]
            out |= set(found) or {node.module}
            if len(found) < len(node.names):  # some names are objects of the module itself
                out.add(node.module)
    return {m for m in out if is_module(m, root)}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the harness modules it imports} for every module of the package folder."""
    root = package.parent
    return {module_name(p, root): imports_of(p, root) - {module_name(p, root)} for p in sorted(package.rglob("*.py"))}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each a cycle's members."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_in_the_harness():
    graph = import_graph()
    assert len(graph) > 20 and graph["harness.worker"], "the graph was read"
    assert cycles(graph) == []


def test_no_command_imports_another_command():
    graph = import_graph()
    sideways = [(m, d) for m, deps in graph.items() if m.startswith("harness.commands.")
                for d in deps if d.startswith("harness.commands.")]
    assert sideways == []


def test_the_checks_can_fail(tmp_path):
    """A planted cycle and a planted command->command import are found by the same functions."""
    pkg = tmp_path / "harness"
    (pkg / "commands").mkdir(parents=True)
    for f in ("__init__.py", "commands/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "a.py").write_text("def f():\n    from harness import b\n")
    (pkg / "b.py").write_text("from harness.a import f\n")
    (pkg / "commands" / "run.py").write_text("from harness.commands.list import main\n")
    (pkg / "commands" / "list.py").write_text("def main(): pass\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["harness.a", "harness.b"]]
    assert "harness.commands.list" in graph["harness.commands.run"]


# --------------------------------------------------------------------------- records keep their shape
# Records written by one tiny PyTorch run per model just before issue 13's restructuring (commit
# 02bbff0). The same command must write a record with the same keys everywhere and the same values
# wherever a value does not depend on the clock, the machine, the commit or the library versions.
BEFORE = sorted((REPO / "tests" / "records").glob("pytorch-*-before-seams.json"))
STABLE = ("status", "error", "config", "param_count", "spec_param_count", "layout", "info", "data_manifest",
          "schema")


def key_paths(obj, prefix: str = "") -> set[str]:
    """Every key path of a record; a list of dicts contributes its first element's keys as [0]."""
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out |= {f"{prefix}.{k}"} | key_paths(v, f"{prefix}.{k}")
    elif isinstance(obj, list) and obj and isinstance(obj[0], dict):
        out |= key_paths(obj[0], f"{prefix}[0]")
    return out


# Paths whose contents are the machine's or the libraries' own (environment facts, versions).
MACHINE = re.compile(r"^\.(environment|versions)\.")
# Keys a record gained after those records were written (a record only grows), each with its reason;
# a path listed here must be in every new record, and nothing else may appear or go.
ADDED = {".flops": "issue 15: the model's FLOPs per example and the run's MFU",
         ".flops_per_example": "issue 15: the FLOPs per example, at the top for the report",
         ".metrics.test_loss": "issue 15: the test loss beside the accuracy (bits per byte for the transformer)",
         ".info.threads": "issue 15: the trainer's compute threads (what the matmul peak runs on)",
         ".timing.verify_s": "issue 19: the worker hashes the arrays it mapped, before the clock starts",
         ".data_seen": "issue 19: those digests against the manifest, so a record never claims bytes it did not see"}


# What a fake record need not mirror: what save() adds, an implementation's own fast-path flags
# and versions, the machine's nested facts (GPU lists, links).
OWN = re.compile(r"^\.(key|schema|versions|info\.fast_path|flops\.peak\.versions)(\.|$)|^\.environment\.[^.]+\.")


def added(path: str) -> bool:
    return any(path == k or path.startswith(k + ".") for k in ADDED)


@pytest.mark.parametrize("path", BEFORE, ids=lambda p: p.stem.split("-")[1])
def test_a_record_keeps_its_keys_and_values(path, data_cache, tmp_path):
    before = json.loads(path.read_text())
    args = before["command"].split()[3:]  # after "python -m harness"
    out = args.index("--out")
    args[out + 1] = str(tmp_path)
    args.remove("--format"), args.remove("json")
    proc, after = harness_json(*args, cache=data_cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p for p in key_paths(after) if not MACHINE.match(p) and not added(p)} == \
           {p for p in key_paths(before) if not MACHINE.match(p)}
    assert set(ADDED) <= key_paths(after)
    # the fake records other tests use are tied to this real one: every key it has, they have
    fake = fake_records.record(model=before["impl"]["model"])
    missing = {p for p in key_paths(after) if not OWN.match(p)} - key_paths(fake)
    assert not missing, f"tests/fake_records.py lacks keys a real record has: {sorted(missing)}"
    after["info"].pop("threads", None)
    for key in STABLE:
        assert after[key] == before[key], key
    assert {k: v for k, v in after["impl"].items() if k != "version"} == \
           {k: v for k, v in before["impl"].items() if k != "version"}
    assert after["plan"] == before["plan"], "the plan digest is stable: --resume still finds old runs"
    assert after["key"]["config"] == before["key"]["config"]
    assert [(e["epoch"], e["steps"], e["examples"]) for e in after["epochs"]] == \
           [(e["epoch"], e["steps"], e["examples"]) for e in before["epochs"]]
    want = before["command"].split()
    want[want.index("--out") + 1] = str(tmp_path)
    assert after["command"] == " ".join(want)
