"""The Julia bridge: what CI checks without Julia, and the checks that need it (skipped with the reason).

Without Julia: every .jl file parses (tree-sitter-julia); every package name the .jl files use is
one the pinned packages define (VERIFIED, with sources); every spec["..."] a .jl file reads is a
key of the spec data the runtime hands over (ModelSpec.as_data), and no model restates a spec
constant; the pins parse with juliapkg's own parser; juliapkg finds exactly one environment per
framework; the Python side of the bridge (julia_models/handoff.py, the weight mappings beside the
models) keeps strides canonical and read-only memory read-only, round-trips weights bit for bit,
and reproduces PyTorch's logits when numpy runs Flux's and Knet's documented semantics on the
converted weights; the runtime's glue, run against a numpy stand-in for DLRosetta, hands over
the spec data and yields the manifest's digests.
With Julia: the real Julia models, through harness/runtimes/julia.py, in a fresh process.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, harness
from harness.protocol import RunOptions
from harness.registry import select
from harness.runtimes import julia as runtime
from harness.specs import CNN, RESNET50, RNN, SPECS
from julia_models import handoff as H
from julia_models.flux import weights as flux_weights
from julia_models.knet import weights as knet_weights

JL_FILES = sorted((REPO / "julia_models").rglob("*.jl"))
JULIA = select(lang="julia")
MAPPINGS = {"flux": flux_weights, "knet": knet_weights}

# Names the .jl files take from packages, each checked in the pinned version's source.
FLUX = "Flux 0.16.10 src/Flux.jl"
KNET = ("Knet v1.4.10 src/Knet.jl (tag v1.4.10 of denizyuret/Knet.jl; the export list re-exports "
        "Knet.Ops20, Knet.Train20 and AutoGrad names)")
VERIFIED = {
    **{f"Flux.{n}": f"{FLUX}: export" for n in
       ("Chain", "Conv", "Dense", "Dropout", "MaxPool", "BatchNorm", "GlobalMeanPool", "Embedding",
        "testmode!", "trainmode!")},  # the last two: the export list's last line (the ONNX export, issue 14)
    "Flux.relu": f"{FLUX}: @reexport using NNlib (NNlib exports ACTIVATIONS, incl. relu)",
    "Flux.sigmoid": f"{FLUX}: @reexport using NNlib (NNlib: export sigmoid, ... # Aliases)",
    "Flux.Momentum": f"{FLUX}: @reexport using Optimisers (Optimisers 0.4 exports Momentum(η, ρ))",
    "Flux.Adam": f"{FLUX}: @reexport using Optimisers (Optimisers 0.4 exports Adam(η, β, ϵ))",
    **{f"Flux.{n}": f"{FLUX}: @reexport using MLDataDevices: ..., {n}"
       for n in ("cpu_device", "gpu_device", "CPUDevice", "CUDADevice", "default_device_rng")},
    **{f"Flux.{n}": f"{FLUX}: @compat(public, ...)" for n in
       ("pullback", "setup", "update!", "trainables", "onehotbatch", "logitcrossentropy", "glorot_uniform",
        "orthogonal", "@layer")},
    "MLUtils.chunk": "MLUtils 0.4 src/MLUtils.jl: export chunk (src/utils.jl: rrule ∇chunk, one dx per call)",
    "MLUtils.zeros_like": "MLUtils 0.4 src/MLUtils.jl: export zeros_like (like: @ignore_derivatives fill!(similar))",
    **{f"Knet.{n}": f"{KNET}: export" for n in
       ("@diff", "Adam", "KnetArray", "Momentum", "Param", "grad", "nll", "update!", "value", "conv4", "dropout",
        "mat", "param", "param0", "pool", "relu", "xavier_uniform", "batchnorm", "bnmoments", "bnparams", "RNN")},
    # Knet 1.4.10 defines training() = AutoGrad.recording() but no longer exports it (src/knet.jl:
    # "export atype, training, seed!, dir, cuallocator ## do not export, use with Knet.x"); an
    # explicit `using Knet: training` names it all the same. Knet <= 1.4.4 still exported it.
    "Knet.training": "Knet v1.4.10: defined (training() = AutoGrad.recording()), not exported; imported by name",
    "Knet.seed!": "Knet v1.4.10: defined, not exported: seed!(n) = (CUDA.functional() && CUDA.seed!(n); Random.seed!(n))",
    "Knet.CUDA": "Knet v1.4.10 src/Knet.jl: import AutoGrad, CUDA",
    "Knet.CUDA.functional": "CUDA.jl 1-3 (Knet's bound): CUDA.functional()",
    # the transformer (issue 15)
    "Flux.MultiHeadAttention": f"{FLUX}: export (src/layers/attention.jl: fields nheads, q_proj, k_proj, v_proj, "
                               "attn_drop, out_proj; NNlib.dot_product_attention(q, k, v; nheads, mask, "
                               "fdrop = attn_drop))",
    "Flux.gelu_erf": ("NNlib >= 0.9.29 (FluxML/NNlib.jl PR #629, merged 2025-02-26; v0.9.29 of 2025-03-19 adds its "
                      "SpecialFunctions weakdep compat, #630): in ACTIVATIONS (exported, re-exported by Flux's "
                      "@reexport using NNlib), x/2 (1 + erf(x/√2)) defined by ext/NNlibSpecialFunctionsExt.jl once "
                      "SpecialFunctions is loaded; UNARY_ACTS gives its rrule (deriv_gelu_erf)"),
    "Flux.AdamW": "@reexport using Optimisers (Optimisers 0.4 exports AdamW(η, β, λ, ϵ; couple = true): "
                  "x -= η (Adam's step + λ x), PyTorch's form)",
    "Flux.Optimisers.Leaf": "Flux: import Optimisers: Optimisers; Optimisers src/interface.jl: mutable struct Leaf",
    "Flux.Optimisers.adjust!": "Optimisers 0.4 src/adjust.jl: adjust!(tree; kw...) walks a state subtree, "
                               "adjust!(ℓ::Leaf; kw...) sets a field of the rule (AdamW's lambda)",
    "NNlib.make_causal_mask": "NNlib 0.9 src/attention.jl (exported): m[i, j] = i ≤ j over (kv_len, q_len), "
                              "triu(trues_like(x, (len, len))), @non_differentiable",
    "Knet.bmm": f"{KNET}; src/ops20/Ops20.jl: export bmm (bmm.jl: bmm(A, B; transA, transB), @primitive1)",
    "Knet.softmax": f"{KNET}; src/ops20/Ops20.jl: export softmax (softmax.jl: softmax(x; dims), @primitive1)",
    "Knet.AutoGrad.full": "Knet v1.4.10 src/Knet.jl: import AutoGrad; AutoGrad src/sparse.jl: full(b::Sparse) "
                          "(an indexed Param's gradient as an array), full(x) = x",
    "SpecialFunctions.erf": "SpecialFunctions 1-2: export erf; AutoGrad src/specialfunctions.jl: "
                            "@primitive erf(x),dy,y (its derivative 2/√π exp(-x²))",
    "LinearAlgebra.BLAS": "Julia stdlib LinearAlgebra (BLAS.get_num_threads)",
    "SHA.sha256": "Julia stdlib SHA", "Random.seed!": "Julia stdlib Random",
    "Statistics.mean": "Julia stdlib Statistics",
    "LinearAlgebra.qr": "Julia stdlib LinearAlgebra", "LinearAlgebra.diag": "Julia stdlib LinearAlgebra",
}
PACKAGES = ("Flux", "Knet", "MLUtils", "NNlib", "Random", "SHA", "SpecialFunctions", "Statistics", "LinearAlgebra")


# --------------------------------------------------------------------------- Julia sources
@pytest.fixture(scope="module")
def parser():
    import tree_sitter
    import tree_sitter_julia

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_julia.language()))


def _nodes(node):
    yield node
    for child in node.children:
        yield from _nodes(child)


def _tree(parser, path: Path):
    return parser.parse(path.read_bytes()).root_node


def test_every_julia_file_parses(parser):
    # DLRosetta.jl, run.jl, and per framework a trainer and the four models
    assert len(JL_FILES) == 12, [p.name for p in JL_FILES]
    for path in JL_FILES:
        bad = [(n.type, n.start_point) for n in _nodes(_tree(parser, path)) if n.type == "ERROR" or n.is_missing]
        assert not bad, f"{path.relative_to(REPO)}: {bad[:3]}"
    assert parser.parse(b"function f(x)\n  x +\n").root_node.has_error  # the check can fail


def package_names(parser, path: Path) -> set[str]:
    """`Pkg.name` for every name imported from (or qualified by) an absolute package."""
    out = set()
    for n in _nodes(_tree(parser, path)):
        kids = n.named_children
        if n.type == "selected_import" and kids[0].type == "identifier":  # using Pkg: a, b (not ..Relative)
            pkg = kids[0].text.decode()
            out.update(f"{pkg}.{c.text.decode()}" for c in kids[1:] if c.text.decode() != pkg)
        elif n.type in ("using_statement", "import_statement"):
            assert kids[0].type == "selected_import", f"{path.name}: import names explicitly: {n.text.decode()}"
        elif n.type == "field_expression" and n.parent.type != "field_expression":
            if n.text.decode().split(".")[0] in PACKAGES:
                out.add(n.text.decode())
        elif n.type == "macrocall_expression" and kids[0].type == "identifier" and kids[0].text.decode() in PACKAGES:
            out.add(f"{kids[0].text.decode()}.{kids[1].text.decode()}")  # Flux.@layer
    return out


def test_julia_code_uses_only_verified_package_names(parser):
    used = set().union(*(package_names(parser, p) for p in JL_FILES))
    assert {"Flux.pullback", "Knet.@diff", "MLUtils.chunk"} <= used  # the extraction sees every style
    unverified = sorted(used - set(VERIFIED))
    assert not unverified, f"names not checked against the pinned sources: {unverified}"


def test_relative_imports_name_definitions(parser):
    """`using ..FluxTrainer: Trainer` and friends name things the included files define."""
    models = REPO / "julia_models"
    sources = {"DLRosetta": (models / "DLRosetta.jl").read_text(),
               "FluxTrainer": (models / "flux/trainer.jl").read_text(),
               "KnetTrainer": (models / "knet/trainer.jl").read_text()}
    for path in JL_FILES:
        for n in _nodes(_tree(parser, path)):
            if n.type == "selected_import" and n.named_children[0].type == "import_path":
                module = n.named_children[0].text.decode().lstrip(".")
                for c in n.named_children[1:]:
                    name = c.text.decode()
                    pattern = (f"function {name}", f"{name}(", f"const {name}", f"struct {name}", f"{name} =")
                    assert any(p in sources[module] for p in pattern), f"{path.name}: {module} lacks {name}"


# --------------------------------------------------------------------------- environments and pins
def _env(fw: str) -> tuple[dict, dict]:
    import tomllib

    pkg = json.loads(runtime.deps_file(fw).read_text())
    toml = tomllib.loads((runtime.env_dir(fw) / "Project.toml").read_text())
    return pkg, toml


@pytest.mark.parametrize("fw", list(runtime.FRAMEWORKS))
def test_julia_dependency_declarations_agree(fw):
    """juliapkg.json (what juliacall installs) and Project.toml (plain Julia) declare the same packages."""
    pkg, toml = _env(fw)
    assert {k: v["uuid"] for k, v in pkg["packages"].items()} == toml["deps"]
    assert {k: v["version"] for k, v in pkg["packages"].items() if "version" in v} == \
           {k: v for k, v in toml["compat"].items() if k != "julia"}
    assert pkg["julia"] == toml["compat"]["julia"]


def _allows(spec: str, version: str) -> bool:
    from juliapkg.compat import Compat, Version

    return Version.parse(version) in Compat.parse(spec)


def test_pinned_versions_are_the_checked_ones():
    """Parsed with juliapkg's own compat parser: Flux exactly 0.16.10 (0.16.11 sends BatchNorm through
    NNlib.batchnorm, which the mapping was not written against), NNlib from 0.9.30 (the version read)
    to below 0.9.41 (NNlib's functional normalisation), Knet exactly 1.4.10."""
    flux = _env("flux")[0]["packages"]
    assert _allows(flux["Flux"]["version"], "0.16.10")
    assert not any(_allows(flux["Flux"]["version"], v) for v in ("0.16.9", "0.16.11", "0.17.0"))
    assert _allows(flux["NNlib"]["version"], "0.9.30") and _allows(flux["NNlib"]["version"], "0.9.40")
    assert not any(_allows(flux["NNlib"]["version"], v) for v in ("0.9.29", "0.9.41", "0.9.42", "0.10.0"))
    knet = _env("knet")[0]["packages"]
    assert _allows(knet["Knet"]["version"], "1.4.10") and not _allows(knet["Knet"]["version"], "1.4.9")


@pytest.mark.parametrize("fw", list(runtime.FRAMEWORKS))
def test_every_package_the_julia_files_load_is_declared(parser, fw):
    declared = set(_env(fw)[0]["packages"])
    files = [REPO / "julia_models/DLRosetta.jl", *sorted((REPO / "julia_models" / fw).glob("*.jl"))]
    used = {name.split(".")[0] for p in files for name in package_names(parser, p)}
    assert used and used <= declared, f"{fw}: {sorted(used - declared)} not in {runtime.deps_file(fw)}"


@pytest.mark.parametrize("fw", list(runtime.FRAMEWORKS))
def test_juliapkg_finds_one_environment_per_framework(fw, monkeypatch):
    """juliapkg merges every juliapkg.json it finds on sys.path and one folder below each editable
    package (juliapkg/deps.py). With julia_models installed as an editable package and the worker's
    sys.path, it must find this framework's file and not the other's (Flux and Knet cannot share)."""
    import juliapkg.deps

    finder = types.ModuleType("__editable___dl_rosetta_0_1_0_finder")
    finder.MAPPING = {"harness": str(REPO / "harness"), "julia_models": str(REPO / "julia_models")}
    monkeypatch.setitem(sys.modules, finder.__name__, finder)
    hook = type("Finder", (), {"__module__": finder.__name__})()
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, hook])
    monkeypatch.setattr(sys, "path", [str(REPO), *sys.path])
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("PYTHON_JULIA")})
    runtime.configure(fw)  # sets PYTHON_JULIAPKG_PROJECT and the threads in this copy of the environment
    assert os.environ["PYTHON_JULIAPKG_PROJECT"] == str(runtime.project(fw))
    found = {Path(f) for f in juliapkg.deps.deps_files()}
    ours = {f for f in found if REPO / "julia_models" in f.parents}
    assert ours == {runtime.deps_file(fw)}, sorted(map(str, ours))
    # the check can fail: a juliapkg.json at julia_models/<framework>/ would be picked up for both
    assert (REPO / "julia_models" / fw).is_dir() and not (REPO / "julia_models" / fw / "juliapkg.json").exists()


def test_threads_follow_the_juliacall_version(monkeypatch):
    monkeypatch.delenv("PYTHON_JULIACALL_THREADS", raising=False)
    assert runtime.threads_setting("0.9.34")[0] == "1"  # before PythonCall PR #758
    assert runtime.threads_setting("0.9.35")[0] == runtime.threads_setting("0.9.37")[0] == "auto"
    monkeypatch.setenv("PYTHON_JULIACALL_THREADS", "4")
    assert runtime.threads_setting("0.9.30") == ("4", "set by PYTHON_JULIACALL_THREADS")
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["julia"]
    assert extra == ["juliacall>=0.9.35"]


# --------------------------------------------------------------------------- the spec in Julia
# Function parameters that hold part of the spec, by the name the .jl files give them.
SPEC_PARAMETERS = {"opt": ("optimizer",), "block": ("blocks", "[]")}


def _spec_reads(parser, path: Path) -> list[tuple[tuple[str, ...], tuple[int, int]]]:
    """Every key path a file reads from the spec: spec["a"], spec["a"]["b"], and x["b"] where the
    file binds x = spec["a"] or `for x in spec["a"]` (x is then an element of the list at "a"),
    or names a function parameter as SPEC_PARAMETERS does."""
    root = _tree(parser, path)

    def chain(n):  # spec["a"]["b"] -> ("spec", ["a", "b"]); None unless every index is one string
        keys = []
        while n.type == "index_expression":
            obj, index = n.named_children[0], n.named_children[1]
            kids = index.named_children
            if index.type != "vector_expression" or len(kids) != 1 or kids[0].type != "string_literal":
                return None
            keys.insert(0, kids[0].text.decode().strip('"'))
            n = obj
        return (n.text.decode(), keys) if n.type == "identifier" else None

    bindings = {"spec": (), **SPEC_PARAMETERS}
    for n in _nodes(root):  # x = spec[...]  and  for x in spec[...]
        if n.type in ("assignment", "for_binding") and len(n.named_children) >= 2:
            target, value = n.named_children[0], n.named_children[-1]
            got = chain(value) if value.type == "index_expression" else None
            if target.type == "identifier" and got and got[0] == "spec":
                bindings[target.text.decode()] = tuple(got[1]) + (("[]",) if n.type == "for_binding" else ())
    reads = []
    for n in _nodes(root):
        got = chain(n) if n.type == "index_expression" else None
        if got and got[0] in bindings:
            reads.append((bindings[got[0]] + tuple(got[1]), n.start_point))
    return reads


def _has(data, path) -> bool:
    for key in path:
        if key == "[]":
            if not isinstance(data, list) or not data:
                return False
            data = data[0]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            return False
    return True


def test_every_spec_key_a_julia_file_reads_reaches_julia(parser):
    """spec["..."] in a model file is a key of its model's as_data(); in a trainer or DLRosetta.jl,
    of every model's. Nested reads (spec["optimizer"]["lr"], block["prefix"] over spec["blocks"])
    are followed through the names the file binds them to."""
    data = {name: spec.as_data() for name, spec in SPECS.items()}
    seen = set()
    for path in JL_FILES:
        models = [path.stem] if path.stem in data else list(data)
        for keys, where in _spec_reads(parser, path):
            seen.add(keys)
            for model in models:
                assert _has(data[model], keys), f"{path.relative_to(REPO)}:{where[0] + 1}: {keys} not in {model}'s spec"
    # the extraction sees every kind of read, so the check can fail
    assert {("channels",), ("blocks", "[]", "prefix"), ("optimizer", "lr"), ("eval_batch",), ("vocab",)} <= seen
    assert not _has(data["cnn"], ("blocks", "[]", "prefix")) and not _has(data["rnn"], ("optimizer", "gamma"))


def test_spec_reads_extraction_catches_unknown_keys(parser, tmp_path):
    src = tmp_path / "cnn.jl"
    src.write_text('opt = spec["optimizer"]\nx = opt["nope"] + spec["dense"]\nfor b in spec["blocks"]\n b["w"]\nend\n')
    reads = {keys for keys, _ in _spec_reads(parser, src)}
    assert reads == {("optimizer",), ("optimizer", "nope"), ("dense",), ("blocks",), ("blocks", "[]", "w")}


def _numbers(value) -> set[float]:
    if isinstance(value, bool):
        return set()
    if isinstance(value, (int, float)):
        return {float(value)}
    if isinstance(value, dict):
        return set().union(*map(_numbers, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_numbers, value)) if value else set()
    return set()


@pytest.mark.parametrize("path", [p for p in JL_FILES if p.stem in SPECS], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_models_restate_no_spec_constant(parser, path):
    """No number literal in a model file equals one of its spec's constants (above 3, which kernel
    sizes, strides and padding need): those are read from the spec data."""
    data = SPECS[path.stem].as_data()
    constants = _numbers({k: v for k, v in data.items() if k not in ("weights", "weight_keys")}) - {0, 1, 2, 3}
    literals = [(n.text.decode(), n.start_point[0] + 1) for n in _nodes(_tree(parser, path))
                if n.type in ("integer_literal", "float_literal")]
    restated = [(t, line) for t, line in literals if _julia_number(t) in constants]
    assert not restated, f"{path.relative_to(REPO)} restates spec constants: {restated}"
    assert {_julia_number("30_000"), _julia_number("1.0f-5"), _julia_number("0.25")} <= \
        _numbers(RNN.as_data()) | _numbers(RESNET50.as_data()) | _numbers(CNN.as_data())  # the check can fail


def _julia_number(text: str) -> float:
    """A Julia number literal's value: 30_000, 0.25, 1e-5, 2.0f0 (Float32 exponent)."""
    return float(text.replace("_", "").replace("f", "e"))


# --------------------------------------------------------------------------- issue 20, as the code shows it
def _function(parser, path: Path, name: str):
    for n in _nodes(_tree(parser, path)):
        if n.type == "function_definition":
            sig = n.named_children[0].text.decode()
            if sig.startswith((name + "(", f"({name}")):
                return n
    raise AssertionError(f"{path.name}: no function {name}")


def test_flux_losses_stay_on_the_device_until_the_epoch_ends(parser):
    """No host scalar per step: the loss is a (1, 1) array, copied device to device into the epoch's
    vector, which is read back once after the loop (issue 20, point 1)."""
    body = _function(parser, REPO / "julia_models/flux/trainer.jl", "train_epoch!")
    loop = next(n for n in _nodes(body) if n.type == "for_statement")
    text = loop.text.decode()
    assert "copyto!(losses, j, loss, 1, 1)" in text and "Flux.pullback" in text
    assert not any(n.type == "assignment" and n.named_children[0].type == "index_expression" for n in _nodes(loop))
    after = body.text.decode().split(text)[1]
    assert "Array(losses)" in after
    assert "agg = l -> mean(l; dims = 2)" in (REPO / "julia_models/flux/trainer.jl").read_text()


def test_flux_gru_loop_slices_nothing(parser):
    """The recurrence walks eachslice steps and splits gates with chunk (cheap adjoints); no
    getindex/view of a range inside the loop Zygote differentiates (issue 20, point 2)."""
    gru = _function(parser, REPO / "julia_models/flux/rnn.jl", "m::CuDNNGRU")
    loop = next(n for n in _nodes(gru) if n.type == "for_statement")
    assert "eachslice(gx; dims = 2)" in loop.text.decode() and loop.text.decode().count("chunk(") == 2
    sliced = [n.text.decode() for n in _nodes(loop) if n.type == "index_expression"]
    assert not sliced and "view(" not in loop.text.decode(), sliced


def test_device_random_generators_are_seeded():
    """Flux: the device RNG dropout draws from on the GPU (issue 20, point 3); Knet: Knet.seed! (CPU and CUDA)."""
    trainer = (REPO / "julia_models/flux/trainer.jl").read_text()
    assert "Random.seed!(default_device_rng(dev), seed)" in trainer
    for model in ("cnn", "resnet50", "rnn", "transformer"):
        assert "Random.seed!(seed)" in (REPO / f"julia_models/flux/{model}.jl").read_text()
        assert "Knet.seed!(seed)" in (REPO / f"julia_models/knet/{model}.jl").read_text()


def test_julia_wraps_numpy_memory_read_only(parser):
    """host_array wraps under GC.@preserve, accepts canonical-equivalent strides (size-1 axes free)
    and returns a ReadOnly whose setindex! throws (issue 20, point 4; the Julia-side run is in CHECK)."""
    src = REPO / "julia_models/DLRosetta.jl"
    body = _function(parser, src, "host_array").text.decode()
    assert "GC.@preserve a unsafe_wrap" in body and "ReadOnly{T,N}(data)" in body and "column_major(a)" in body
    setindex = [n.text.decode() for n in _nodes(_tree(parser, src)) if n.type == "assignment"
                and n.named_children[0].text.decode().startswith("Base.setindex!(::ReadOnly")]
    assert len(setindex) == 1 and "throw(ArgumentError" in setindex[0]
    column_major = _function(parser, src, "column_major").text.decode()
    assert "n > 1 && s != expected" in column_major


def test_flux_tables_are_built_as_tables(parser):
    """Every Flux model's table returns a FluxTrainer.Table, and the Trainer asserts it (point 5)."""
    for model in ("cnn", "resnet50", "rnn", "transformer"):
        tables = [n.text.decode() for n in _nodes(_tree(parser, REPO / f"julia_models/flux/{model}.jl"))
                  if (n.type == "assignment" and n.named_children[0].text.decode().startswith("table("))
                  or (n.type == "function_definition" and n.named_children[0].text.decode().startswith("table("))]
        assert len(tables) == 1 and "= Table(" in tables[0], (model, tables)
    assert "table(model)::Table" in (REPO / "julia_models/flux/trainer.jl").read_text()


def test_cuda_failure_names_the_runtime_fix(parser):
    """--device cuda on a host where CUDA.jl cached 'no runtime' names CUDA.set_runtime_version! (point 7)."""
    problem = _function(parser, REPO / "julia_models/DLRosetta.jl", "cuda_problem").text.decode()
    assert "CUDA_Runtime.is_available()" in problem and "CUDA.set_runtime_version!(v" in problem
    assert "cuda_problem()" in _function(parser, REPO / "julia_models/flux/trainer.jl", "pick_device").text.decode()


# --------------------------------------------------------------------------- data layout
def test_images_are_a_column_major_view_of_the_same_bytes():
    x = np.random.default_rng(0).random((5, 3, 4, 6), dtype=np.float32)
    j = H.images(x)
    assert j.shape == (6, 4, 3, 5) and j.flags.f_contiguous and np.shares_memory(j, x)
    assert j[2, 1, 0, 4] == x[4, 0, 1, 2]  # Julia's x[w, h, c, n] (0-based here) is numpy's x[n, c, h, w]
    assert H.harness_bytes(j) == x.tobytes()


def canonical(a: np.ndarray) -> tuple[int, ...]:
    return tuple(int(s) for s in np.cumprod((a.itemsize,) + a.shape[:-1]))


def test_size_one_axes_get_canonical_strides():
    """x[None, i] is C-contiguous with stride 0 on its new axis; Julia gets canonical strides."""
    x = np.random.default_rng(0).random((5, 3, 4, 6), dtype=np.float32)
    one = x[None, 2]  # (1, 3, 4, 6), strides (0, 96, 24, 4)
    assert one.flags.c_contiguous and one.T.strides != canonical(one.T)  # what Julia would have rejected
    j = H.images(one)
    assert j.strides == canonical(j) and np.shares_memory(j, x) and (j[..., 0] == x[2].T).all()
    plan = H.epoch_plan(np.arange(4, dtype=np.int64)[None])  # one step of batch 4
    assert plan.shape == (4, 1) and plan.strides == canonical(plan)
    with pytest.raises(ValueError, match="Fortran-contiguous"):
        H.fortran_view(np.zeros((3, 4), np.float32))


def test_read_only_memory_stays_read_only(tmp_path):
    """The harness memory-maps its prepared arrays read-only; what Julia gets is a read-only buffer
    (PythonCall makes it an immutable PyArray, DLRosetta.host_array a ReadOnly)."""
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((4, 3, 2, 2), dtype=np.float32))
    x = np.load(path, mmap_mode="r")
    j = H.images(x[None, 1])
    assert not j.flags.writeable and np.shares_memory(j, x) and j.strides == canonical(j)
    assert memoryview(j).readonly


def test_labels_tokens_and_plans_are_one_based():
    y = np.array([0, 9, 3], dtype=np.int64)
    assert H.labels(y).tolist() == [1, 10, 4]
    t = np.array([[0, 0, 5], [7, 29_999, 1]], dtype=np.int64)  # (N=2, T=3), front-padded with 0
    j = H.tokens(t)
    assert j.shape == (3, 2) and j.flags.f_contiguous and j[:, 1].tolist() == [8, 30_000, 2]
    index = np.arange(12, dtype=np.int64).reshape(3, 4)  # 3 steps of batch 4
    plan = H.epoch_plan(index)
    assert plan.shape == (4, 3) and plan.flags.f_contiguous and (plan[:, 1] == index[1] + 1).all()
    assert H.logits(np.arange(6, dtype=np.float32).reshape(2, 3)).tolist() == [[0, 3], [1, 4], [2, 5]]


def test_digest_of_what_julia_holds_is_the_manifests():
    """DLRosetta.data_digest hashes the held arrays in memory order with the +1 taken off; for the
    hand-off's arrays that is exactly the harness's bytes, and an off-by-one would show."""
    rng = np.random.default_rng(4)
    tok = rng.integers(0, 30_000, (7, 150)).astype(np.int64)
    y = rng.integers(0, 10, 7).astype(np.int64)
    img = rng.random((7, 3, 8, 8), dtype=np.float32)
    for held, original in ((H.tokens(tok), tok), (H.labels(y), y), (H.images(img), img)):
        assert hashlib.sha256(H.harness_bytes(held)).hexdigest() == hashlib.sha256(original.tobytes()).hexdigest()
    assert H.harness_bytes(H.labels(y) + 1) != y.tobytes()
    assert H.harness_bytes(np.asfortranarray(tok + 1)) != tok.tobytes()  # not the transposed order


# --------------------------------------------------------------------------- weights
def random_weights(spec, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in spec.weight_shapes().items()}


@pytest.mark.parametrize("spec", [CNN, RESNET50, RNN], ids=lambda s: s.name)
@pytest.mark.parametrize("fw", list(MAPPINGS))
def test_weights_round_trip_bit_identical(fw, spec):
    m = MAPPINGS[fw]
    assert runtime.weights(fw) is m  # the runtime's registry points at the mapping beside the models
    w = random_weights(spec)
    native = m.to_julia(spec, w)
    assert {k: a.shape for k, a in native.items()} == m.native_shapes(spec)
    assert all(a.flags.f_contiguous and a.dtype == np.float32 for a in native.values())
    assert sum(a.size for a in native.values()) == sum(a.size for a in w.values())
    back = m.from_julia(spec, native)
    assert list(back) == list(spec.weight_shapes())
    assert all(np.array_equal(back[k], w[k]) and back[k].flags.c_contiguous for k in w)


def test_knet_keeps_batchnorm_and_gru_packed():
    shapes = knet_weights.native_shapes(RESNET50)
    assert shapes["bn1.params"] == (128,) and shapes["bn1.running_var"] == (1, 1, 64, 1)
    assert "bn1.weight" not in shapes and shapes["layer1.0.downsample.0.weight"] == (1, 1, 64, 256)
    assert knet_weights.native_shapes(RNN)["gru.w"] == (1, 1, 68_100)
    assert flux_weights.native_shapes(RNN)["embedding.weight"] == (125, 30_000)
    assert knet_weights.native_shapes(CNN)["conv2.bias"] == (1, 1, 50, 1) and flux_weights.native_shapes(CNN)["conv2.bias"] == (50,)
    w = random_weights(RESNET50)
    packed = knet_weights.to_julia(RESNET50, w)["bn1.params"]
    assert np.array_equal(packed, np.concatenate([w["bn1.weight"], w["bn1.bias"]]))


# numpy versions of the semantics the Julia code relies on, written from the packages' docs and sources
def nnlib_conv(x, w, pad, stride=1):
    """NNlib.conv on WHCN with flipkernel=false (Flux's Conv, Knet's conv4 mode=0): a true convolution."""
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0), (0, 0)))
    kw, kh = w.shape[:2]
    wo, ho = (xp.shape[0] - kw) // stride + 1, (xp.shape[1] - kh) // stride + 1
    y = np.zeros((wo, ho, w.shape[3], x.shape[3]))
    for a in range(kw):
        for b in range(kh):  # y[i] = sum_a w[a] x[i + K-1-a]
            y += np.einsum("whcn,co->whon", xp[a:a + stride * wo:stride, b:b + stride * ho:stride],
                           w[kw - 1 - a, kh - 1 - b])
    return y


def julia_cnn(n, x):
    """The Flux/Knet CNN forward on WHCN x with native weights (Knet's conv biases are (1,1,C,1))."""
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    pool = lambda a: a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, *a.shape[2:]).max(axis=(1, 3))  # noqa: E731
    bias = lambda k: n[k].reshape(1, 1, -1, 1)  # noqa: E731
    h = relu(nnlib_conv(x, n["conv1.weight"], 1) + bias("conv1.bias"))
    h = relu(pool(nnlib_conv(h, n["conv2.weight"], 1) + bias("conv2.bias")))
    h = relu(nnlib_conv(h, n["conv3.weight"], 1) + bias("conv3.bias"))
    h = relu(pool(nnlib_conv(h, n["conv4.weight"], 1) + bias("conv4.bias")))
    h = h.reshape(-1, h.shape[-1], order="F")  # Julia's reshape(x, :, N): column-major
    h = relu(n["fc1.weight"] @ h + n["fc1.bias"].reshape(-1, 1))
    return n["fc2.weight"] @ h + n["fc2.bias"].reshape(-1, 1)


@pytest.fixture(scope="module")
def torch_cnn():
    from python_models.pytorch import cnn

    trainer = cnn.build(CNN, RunOptions(dropout=False))
    x = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    return trainer.get_weights(), x, trainer.predict(x)


@pytest.mark.parametrize("fw", list(MAPPINGS))
def test_converted_cnn_weights_reproduce_pytorch_logits(fw, torch_cnn):
    w, x, ref = torch_cnn
    out = H.logits(julia_cnn(MAPPINGS[fw].to_julia(CNN, w), H.images(x)))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_unflipped_kernels_would_be_caught(torch_cnn):
    w, x, ref = torch_cnn
    n = flux_weights.to_julia(CNN, w)
    for k in ("conv1", "conv2", "conv3", "conv4"):
        n[f"{k}.weight"] = np.asfortranarray(w[f"{k}.weight"].T)  # a cross-correlation kernel, not flipped
    assert np.abs(H.logits(julia_cnn(n, H.images(x))) - ref).max() > 1e-2


def test_strided_stem_convolution_matches_pytorch():
    import torch

    rng = np.random.default_rng(2)
    x, w = rng.random((2, 3, 32, 32), dtype=np.float32), rng.standard_normal((64, 3, 7, 7)).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=3).numpy()
    out = nnlib_conv(H.images(x), H.conv_to_julia(w), pad=3, stride=2)  # WHCN (16, 16, 64, 2)
    np.testing.assert_allclose(out.T, ref, rtol=1e-4, atol=1e-4)


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def flux_gru_classifier(n, tokens):
    """julia_models/flux/rnn.jl's Classifier, in numpy, step by step as its loop runs: the input
    projection hoisted, each step's (3H, B) slice and the recurrent (3H, B) split in thirds (chunk)."""
    e = n["embedding.weight"][:, tokens - 1]  # (E, T, B): column id of the (E, vocab) table
    H_ = n["gru.weight_hh"].shape[1]
    gx = np.einsum("ge,etb->gtb", n["gru.weight_ih"], e) + n["gru.bias_ih"][:, None, None]
    h = np.zeros((H_, tokens.shape[1]))
    for t in range(tokens.shape[0]):  # eachslice(gx; dims = 2)
        xr, xz, xn = np.split(gx[:, t], 3)  # chunk(gi, 3; dims = 1)
        hr, hz, hn = np.split(n["gru.weight_hh"] @ h + n["gru.bias_hh"][:, None], 3)
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        h = (1 - z) * np.tanh(xn + r * hn) + z * h
    return n["fc.weight"] @ h + n["fc.bias"][:, None]


def knet_rnnparam(w, X, H_, gate_id, par):
    """Knet 1.4's rnnparam(r, 1, id, par) for a one-layer unidirectional GRU (src/ops20/rnn.jl)."""
    flat = w.reshape(-1, order="F")
    if par == 1:  # input matrices (X*H) for ids 1:3, hidden (H*H) for 4:6, stored transposed
        lengths = [X * H_] * 3 + [H_ * H_] * 3
        i2 = sum(lengths[:gate_id])
        return flat[i2 - lengths[gate_id - 1]:i2].reshape(-1, H_, order="F")  # reshape(view(w, i1:i2), :, h)
    i1 = len(flat) - 6 * H_ + (gate_id - 1) * H_  # 1 + length(w) - layers*ids*len + (id-1)*len, 0-based
    return flat[i1:i1 + H_]


def knet_gru_classifier(n, tokens):
    """julia_models/knet/rnn.jl's Classifier, in numpy, with Knet's documented GRU equations."""
    X, H_ = 125, 100
    W = {i: knet_rnnparam(n["gru.w"], X, H_, i, 1).T for i in range(1, 7)}  # rnnparam matrices are transposed
    b = {i: knet_rnnparam(n["gru.w"], X, H_, i, 2)[:, None] for i in range(1, 7)}
    x = n["embedding.weight"][:, tokens.T - 1]  # emb[:, permutedims(tokens)]: (X, B, T)
    h = np.zeros((H_, x.shape[1]))
    for t in range(x.shape[2]):
        r = sigmoid(W[1] @ x[:, :, t] + W[4] @ h + b[1] + b[4])
        i = sigmoid(W[2] @ x[:, :, t] + W[5] @ h + b[2] + b[5])
        m = np.tanh(W[3] @ x[:, :, t] + r * (W[6] @ h + b[6]) + b[3])
        h = (1 - i) * m + i * h
    return n["fc.weight"] @ h + n["fc.bias"][:, None]


@pytest.mark.parametrize("fw,forward", [("flux", flux_gru_classifier), ("knet", knet_gru_classifier)])
def test_converted_gru_weights_reproduce_pytorch_logits(fw, forward):
    from python_models.pytorch import rnn

    trainer = rnn.build(RNN, RunOptions())
    rng = np.random.default_rng(3)
    w = {k: (v + 0.1 * rng.standard_normal(v.shape).astype(np.float32)) if "bias" in k else v
         for k, v in trainer.get_weights().items()}  # non-zero biases, so b_hn's place matters
    trainer.set_weights(w)
    x = rng.integers(0, 30_000, size=(3, 150)).astype(np.int64)
    x[:, :40] = 0  # front padding, id 0
    out = H.logits(forward(MAPPINGS[fw].to_julia(RNN, w), H.tokens(x)))
    np.testing.assert_allclose(out, trainer.predict(x), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- the transformer (issue 15)
def softmax0(a):
    e = np.exp(a - a.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def torch_layernorm(x, w, b, eps):
    """flux/transformer.jl's TorchLayerNorm and knet/transformer.jl's layernorm: over the first axis."""
    mu = x.mean(axis=0, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=0, keepdims=True)
    shape = (-1,) + (1,) * (x.ndim - 1)
    return (x - mu) / np.sqrt(var + eps) * w.reshape(shape) + b.reshape(shape)


def gelu_erf(x):
    from scipy.special import erf

    return x / 2 * (1 + erf(x / np.sqrt(2)))


def dense3(n, key, x):
    """Flux's Dense on (in, T, B): W (out, in) times every column, plus the bias."""
    return np.einsum("oi,itb->otb", n[f"{key}.weight"], x) + n[f"{key}.bias"][:, None, None]


def nnlib_attention(q, k, v, heads):
    """NNlib.dot_product_attention(q, k, v; nheads, mask = make_causal_mask(q)) on (C, T, B), from
    NNlib 0.9 src/attention.jl: split_heads is reshape(x, C ÷ nheads, nheads, T, B) (column-major),
    logits[j, i, h, b] = sum_d q[d, h, i, b] / √D * k[d, h, j, b] (j the key), masked where
    make_causal_mask's m[j, i] = j ≤ i is false, softmax over j, then x[d, h, i, b] = sum_j α[j, i, h, b] v[d, h, j, b]."""
    c, t, b = q.shape
    d = c // heads
    split = lambda a: a.reshape(d, heads, t, b, order="F")  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    logits = np.einsum("dhib,dhjb->jihb", q / np.sqrt(d), k)
    keep = np.triu(np.ones((t, t), dtype=bool))[:, :, None, None]  # [j, i]: j <= i
    alpha = softmax0(np.where(keep, logits, -np.inf))
    return np.einsum("jihb,dhjb->dhib", alpha, v).reshape(c, t, b, order="F")


def flux_transformer(n, tokens, arch):
    """julia_models/flux/transformer.jl's GPT in numpy, on Flux's native weights (flux/weights.py)."""
    t = tokens.shape[0]
    x = n["tok_emb.weight"][:, tokens - 1] + n["pos_emb.weight"][:, :t, None]  # (C, T, B)
    for i in range(arch.layers):
        k = f"blocks.{i}"
        h = torch_layernorm(x, n[f"{k}.ln1.weight"], n[f"{k}.ln1.bias"], arch.ln_eps)
        a = nnlib_attention(*(dense3(n, f"{k}.attn.{p}", h) for p in ("q_proj", "k_proj", "v_proj")), arch.heads)
        x = x + dense3(n, f"{k}.attn.out_proj", a)
        h = torch_layernorm(x, n[f"{k}.ln2.weight"], n[f"{k}.ln2.bias"], arch.ln_eps)
        x = x + dense3(n, f"{k}.mlp.proj", gelu_erf(dense3(n, f"{k}.mlp.fc", h)))
    h = torch_layernorm(x, n["ln_f.weight"], n["ln_f.bias"], arch.ln_eps)
    return np.einsum("cv,ctb->vtb", n["tok_emb.weight"], h)  # tied: (vocab, T, B)


def knet_transformer(n, tokens, arch):
    """julia_models/knet/transformer.jl's GPT in numpy, on Knet's native weights (knet/weights.py):
    (C, T*B) activations, q, k, v packed, heads split by reshape + swap23 (column-major) and
    multiplied by bmm (scores[i, j] = k_i . q_j over the key i, then v * probabilities)."""
    t, b = tokens.shape
    c, heads = arch.width, arch.heads
    d = c // heads
    x = (n["tok_emb.weight"][:, tokens - 1] + n["pos_emb.weight"][:, :t, None]).reshape(c, t * b, order="F")
    lin = lambda key, a: n[f"{key}.weight"] @ a + n[f"{key}.bias"][:, None]  # noqa: E731
    split = lambda a: a.reshape(d, heads, t, b, order="F").transpose(0, 2, 1, 3).reshape(d, t, heads * b, order="F")  # noqa: E731
    future = np.tril(np.ones((t, t), dtype=bool), -1)  # [i, j]: key i after query j
    for i in range(arch.layers):
        k = f"blocks.{i}"
        h = torch_layernorm(x, n[f"{k}.ln1.weight"], n[f"{k}.ln1.bias"], arch.ln_eps)
        qkv = lin(f"{k}.attn.qkv", h)
        q, key, v = (split(qkv[j * c:(j + 1) * c]) for j in range(3))
        scores = np.einsum("dis,djs->ijs", key, q) / np.sqrt(d)
        probs = softmax0(np.where(future[:, :, None], -np.inf, scores))
        y = np.einsum("dis,ijs->djs", v, probs)
        y = y.reshape(d, t, heads, b, order="F").transpose(0, 2, 1, 3).reshape(c, t * b, order="F")
        x = x + lin(f"{k}.attn.proj", y)
        h = torch_layernorm(x, n[f"{k}.ln2.weight"], n[f"{k}.ln2.bias"], arch.ln_eps)
        x = x + lin(f"{k}.mlp.proj", gelu_erf(lin(f"{k}.mlp.fc", h)))
    h = torch_layernorm(x, n["ln_f.weight"], n["ln_f.bias"], arch.ln_eps)
    return (n["tok_emb.weight"].T @ h).reshape(-1, t, b, order="F")  # tied: (vocab, T, B)


@pytest.fixture(scope="module")
def torch_transformer():
    """The PyTorch reference at the test size, on probe weights (every bias and LayerNorm tensor
    random too, so a misplaced bias or a q/k/v mix-up moves the logits)."""
    from harness.equivalence import probe_weights
    from python_models.pytorch import transformer

    spec = SPECS["transformer"]
    trainer = transformer.build(spec, RunOptions(dropout=False))
    w = probe_weights(spec, 0)
    trainer.set_weights(w)
    x = np.random.default_rng(5).integers(0, spec.arch.vocab, (3, spec.arch.context)).astype(np.int64)
    return spec, w, x, trainer.predict(x)


@pytest.mark.parametrize("fw,forward", [("flux", flux_transformer), ("knet", knet_transformer)])
def test_converted_transformer_weights_reproduce_pytorch_logits(fw, forward, torch_transformer):
    """The weight mapping (Flux: the packed qkv cut into q_proj, k_proj, v_proj, attn.proj as
    out_proj; both: the token and position tables transposed, the output tied to the token table)
    and each framework's documented attention reproduce PyTorch's logits per position."""
    spec, w, x, ref = torch_transformer
    native = MAPPINGS[fw].to_julia(spec, w)
    assert set(native) == set(MAPPINGS[fw].native_shapes(spec))
    assert all(a.flags.f_contiguous and a.dtype == np.float32 for a in native.values())
    out = H.logits(forward({k: np.asarray(v, np.float64) for k, v in native.items()}, H.tokens(x), spec.arch))
    assert out.shape == ref.shape == spec.logits_shape(3)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    back = MAPPINGS[fw].from_julia(spec, native)
    assert all(np.array_equal(back[k], w[k]) for k in w)


def test_flux_qkv_split_order_and_tied_output_would_be_caught(torch_transformer):
    """The check above can fail: q and k swapped, or an untied (random) output table, move the logits."""
    spec, w, x, ref = torch_transformer
    n = {k: np.asarray(v, np.float64) for k, v in flux_weights.to_julia(spec, w).items()}
    swapped = dict(n, **{"blocks.0.attn.q_proj.weight": n["blocks.0.attn.k_proj.weight"],
                         "blocks.0.attn.k_proj.weight": n["blocks.0.attn.q_proj.weight"]})
    assert np.abs(H.logits(flux_transformer(swapped, H.tokens(x), spec.arch)) - ref).max() > 1e-3
    shape = flux_weights.native_shapes(spec)
    assert shape["blocks.0.attn.q_proj.weight"] == (spec.arch.width, spec.arch.width)
    assert shape["tok_emb.weight"] == (spec.arch.width, spec.arch.vocab)
    assert not any("head" in k or "lm" in k for k in shape), "no output weight of its own: tied"
    packed = knet_weights.to_julia(spec, w)["blocks.0.attn.qkv.weight"]
    assert packed.shape == (3 * spec.arch.width, spec.arch.width) and np.array_equal(packed, w["blocks.0.attn.qkv.weight"])


# --------------------------------------------------------------------------- the runtime's glue
class _Returned:
    """What juliacall hands back for a Julia array: .to_numpy()."""

    def __init__(self, a):
        self._a = np.asarray(a)

    def to_numpy(self):
        return self._a.copy()


class FakeDLRosetta:
    """A numpy stand-in for DLRosetta.jl, for the Python glue: it records what juliacall would
    receive and holds the arrays as the Julia trainers do (by reference, as PyArrays would)."""

    def __init__(self, fw):
        self.fw, self.calls = fw, []

    def load(self, fw, model):
        self.calls.append(("load", fw, model))

    def modulename(self, fw, model):
        return fw.capitalize() + {"cnn": "CNN", "resnet50": "ResNet50", "rnn": "RNN", "transformer": "Transformer"}[model]

    def __getattr__(self, name):  # the model module, e.g. FluxCNN
        if name[:1].isupper():
            return types.SimpleNamespace(name=name)
        raise AttributeError(name)

    def build(self, module, spec, **kw):
        self.calls.append(("build", module.name, kw))
        spec_obj = SPECS[spec["name"]]
        return {"spec": spec, "weights": MAPPINGS[self.fw].to_julia(spec_obj, random_weights(spec_obj))}

    def info(self, t):
        return {"fast_path": {"device": "cpu"}, "deviations": []}

    def weight_keys(self, t):
        return list(t["weights"])

    def fit_data_b(self, t, x, y):
        t["x"], t["y"] = x, y

    def data_digest(self, t, name):
        return hashlib.sha256(H.harness_bytes(t[name])).hexdigest()

    def get_weight(self, t, key):
        return _Returned(t["weights"][key])

    def set_weight_b(self, t, key, a):
        assert a.shape == t["weights"][key].shape and a.flags.f_contiguous
        t["weights"][key] = a


@pytest.mark.parametrize("impl", [i for i in JULIA if i.model in ("cnn", "rnn", "transformer")], ids=lambda i: i.label)
def test_runtime_hands_the_spec_data_and_the_harness_bytes_to_julia(impl, monkeypatch, tmp_path):
    fake = FakeDLRosetta(impl.name)
    monkeypatch.setitem(sys.modules, "juliacall", types.SimpleNamespace(Main=types.SimpleNamespace(DLRosetta=fake)))
    spec = SPECS[impl.model]
    trainer = runtime.build(impl, spec, RunOptions(seed=7, dropout=False))
    (_, module, kw), = [c for c in fake.calls if c[0] == "build"]
    assert module == fake.modulename(impl.name, impl.model) and kw == {"seed": 7, "dropout": False, "device": "cpu"}
    handed = trainer._t["spec"]
    assert handed == spec.as_data() and json.loads(json.dumps(handed)) == handed  # plain data, every key
    rng = np.random.default_rng(5)
    shape = (6, *spec.input_shape)
    tokens = impl.model in ("rnn", "transformer")
    x = rng.integers(0, spec.arch.vocab, shape) if tokens else rng.random(shape, dtype=np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x.astype(spec.input_dtype))
    x = np.load(path, mmap_mode="r")  # as the worker hands it over
    y = rng.integers(0, spec.num_classes, (6, *spec.target_shape)).astype(np.int64)  # the transformer's: (N, T)
    trainer.fit_data(x, y)
    held = trainer._t["x"]
    assert held.strides == canonical(held) and (tokens or not held.flags.writeable)
    if spec.sequence:  # targets one column per window, like the tokens: (T, N), 1-based
        assert trainer._t["y"].shape == spec.target_shape[::-1] + (6,) and (trainer._t["y"][:, 1] == y[1] + 1).all()
    assert trainer.data_digest("x") == hashlib.sha256(np.asarray(x).tobytes()).hexdigest()
    assert trainer.data_digest("y") == hashlib.sha256(y.tobytes()).hexdigest()
    w = random_weights(spec, seed=9)
    trainer.set_weights(w)
    back = trainer.get_weights()
    assert all(np.array_equal(back[k], w[k]) for k in w)
    assert "data_digest" in trainer.info and trainer.info["julia_layout"].startswith("WHCN")


# --------------------------------------------------------------------------- availability
@pytest.mark.parametrize("impl", JULIA, ids=lambda i: i.label)
def test_availability_never_downloads(impl, monkeypatch):
    """Neither juliacall (whose import installs Julia) nor the network is touched by availability()."""
    def no_network(*a, **k):
        raise AssertionError("availability() reached for the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    runtime._reason.cache_clear()
    had_juliacall = "juliacall" in sys.modules
    reason = runtime.availability(impl)
    assert had_juliacall or "juliacall" not in sys.modules
    if reason is not None and reason.startswith("not implemented:"):  # a model not yet written in Julia
        pytest.skip(reason)
    if reason is not None:
        assert "\n" not in reason and "python -m harness setup --julia" in reason
        assert ("Knet 1.4.10" in reason) == (impl.name == "knet")
        assert "env/juliapkg.json" in reason or "older than" in reason


def test_run_fails_fast_with_the_reason(tmp_path):
    (impl,) = select("julia", "flux", None, "resnet50")
    runtime._reason.cache_clear()
    reason = runtime.availability(impl)
    if reason is None:
        pytest.skip("Julia and Flux are installed here: the run would start")
    proc = harness("--lang", "julia", "--framework", "flux", "--model", "resnet50", "--out", str(tmp_path),
                   cache=tmp_path, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: julia/flux/resnet50 cannot run here: {reason}"


# --------------------------------------------------------------------------- with Julia
# Run in a fresh process: juliacall must start before torch is imported (juliacall warns of segfaults).
CHECK = r"""
import hashlib, json, sys
import numpy as np
from harness.protocol import RunOptions, epoch_batches
from harness.registry import select
from harness.runtimes import julia
from harness.specs import get_spec

fw, model = sys.argv[1:3]
(impl,) = select("julia", fw, None, model)
spec, opts = get_spec(model), RunOptions(dropout=False)
julia.import_framework(impl, opts)
t = julia.build(impl, spec, opts)
from juliacall import Main as jl
import importlib
ref = importlib.import_module(f"python_models.pytorch.{model}").build(spec, opts)   # torch after juliacall
out = {"param_count": t.param_count()}
w = ref.get_weights()
t.set_weights(w)
back = t.get_weights()
out["round_trip"] = all(np.array_equal(back[k], w[k]) for k in w)
rng = np.random.default_rng(0)
n, bs = 96, 32
if model in ("rnn", "transformer"):
    x = rng.integers(0, spec.arch.vocab, (n, *spec.input_shape)).astype(np.int64)
else:
    x = rng.random((n, 3, 32, 32), dtype=np.float32)
y = rng.integers(0, spec.num_classes, (n, *spec.target_shape)).astype(np.int64)
out["logits_max_abs_diff"] = float(np.abs(t.predict(x[:8]) - ref.predict(x[:8])).max())
out["single_example"] = t.predict(x[None, 0]).shape == spec.logits_shape(1)   # a size-1 axis, stride 0
t.fit_data(x, y); ref.fit_data(x, y)
out["digest_x"] = t.data_digest("x") == hashlib.sha256(x.tobytes()).hexdigest()
out["digest_y"] = t.data_digest("y") == hashlib.sha256(y.tobytes()).hexdigest()
ro = np.zeros((3, 2), dtype=np.float32, order="F"); ro.setflags(write=False)
held = jl.DLRosetta.host_array(ro)
try:
    jl.seval("a -> (a[1] = 1f0; nothing)")(held)
    out["read_only"] = False
except Exception as e:  # noqa: BLE001 - juliacall raises JuliaError
    out["read_only"] = "read-only" in str(e) and float(ro[0, 0]) == 0.0
odd = np.zeros((4, 3), dtype=np.float32, order="F")[:, :, None]   # strides (4, 16, 0): canonical-equivalent
out["odd_strides"] = tuple(jl.size(jl.DLRosetta.host_array(odd))) == (4, 3, 1)
plan = epoch_batches(n, bs, 0, 0)
out["losses"] = [float(v) for v in t.train_epoch(plan)]
out["torch_losses"] = [float(v) for v in ref.train_epoch(plan)]
print(json.dumps(out))
"""


@pytest.mark.parametrize("impl", JULIA, ids=lambda i: i.label)
def test_julia_model_against_pytorch(impl):
    """Through the runtime: parameter count, get->set->get, logits and three training steps on
    PyTorch's weights (dropout off), the data digests computed in Julia over what the trainer
    holds, read-only wrapping and size-1 strides."""
    runtime._reason.cache_clear()
    reason = runtime.availability(impl)
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, "-c", CHECK, impl.name, impl.model], cwd=REPO,
                          capture_output=True, text=True, timeout=3600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["param_count"] == SPECS[impl.model].param_count
    assert r["round_trip"] and r["digest_x"] and r["digest_y"] and r["read_only"] and r["odd_strides"], r
    assert r["single_example"], r
    assert r["logits_max_abs_diff"] < 1e-4, r
    np.testing.assert_allclose(r["losses"], r["torch_losses"], rtol=1e-3)  # float32, 3 steps: 1e-3 relative
