"""The Julia bridge: what CI checks without Julia, and the checks that need it (skipped with the reason).

Without Julia: every .jl file parses (tree-sitter-julia); every Flux/Knet name the .jl files import
or qualify is one the pinned packages export or mark public (VERIFIED, with sources); the
Python side of the bridge (harness/julia_layout.py) reproduces PyTorch's logits when numpy runs
Flux's and Knet's documented semantics on the converted weights; offsets and round trips.
With Julia: the real Julia models, through harness/runtimes/julia.py, in a fresh process.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, harness
from harness import julia_layout as L
from harness.protocol import RunOptions
from harness.registry import select
from harness.runtimes import julia as runtime
from harness.specs import CNN, RESNET50, RNN

JL_FILES = sorted((REPO / "julia_models").rglob("*.jl"))
JULIA = select(lang="julia")

# Names the .jl files take from packages, each checked in the pinned version's source.
FLUX = "Flux 0.16 src/Flux.jl"
KNET = "Knet 1.4.x src/Knet.jl export list (commit cecb9f53; the 1.4.10 tag's file is not in the index)"
VERIFIED = {
    **{f"Flux.{n}": f"{FLUX}: export" for n in
       ("Chain", "Conv", "Dense", "Dropout", "MaxPool", "BatchNorm", "GlobalMeanPool", "Embedding")},
    "Flux.relu": f"{FLUX}: @reexport using NNlib (NNlib exports ACTIVATIONS, incl. relu)",
    "Flux.sigmoid": f"{FLUX}: @reexport using NNlib (NNlib: export sigmoid, ... # Aliases)",
    "Flux.Momentum": f"{FLUX}: @reexport using Optimisers (Optimisers 0.4 exports Momentum(η, ρ))",
    "Flux.Adam": f"{FLUX}: @reexport using Optimisers (Optimisers 0.4 exports Adam(η, β, ϵ))",
    **{f"Flux.{n}": f"{FLUX}: @reexport using MLDataDevices: ..., {n}"
       for n in ("cpu_device", "gpu_device", "CUDADevice")},
    **{f"Flux.{n}": f"{FLUX}: @compat(public, ...)" for n in
       ("withgradient", "setup", "update!", "trainables", "onehotbatch", "logitcrossentropy", "glorot_uniform",
        "orthogonal", "@layer")},
    **{f"Knet.{n}": f"{KNET}" for n in
       ("@diff", "Adam", "KnetArray", "Momentum", "Param", "grad", "nll", "update!", "value", "conv4", "dropout",
        "mat", "param", "param0", "pool", "relu", "xavier_uniform", "batchnorm", "bnmoments", "bnparams",
        "training", "RNN")},
    "Knet.seed!": "Knet 1.4.x src/knetarrays/random.jl exports seed!; Knet's ops20/dropout.jl: using Knet: seed!",
    "Knet.CUDA": "Knet 1.4.x src/Knet.jl: import AutoGrad, CUDA",
    "Knet.CUDA.functional": "CUDA.jl 1-3 (Knet's bound): CUDA.functional()",
    "SHA.sha256": "Julia stdlib SHA", "Random.seed!": "Julia stdlib Random",
    "Statistics.mean": "Julia stdlib Statistics",
    "LinearAlgebra.qr": "Julia stdlib LinearAlgebra", "LinearAlgebra.diag": "Julia stdlib LinearAlgebra",
}


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


def test_every_julia_file_parses(parser):
    assert len(JL_FILES) == 9, [p.name for p in JL_FILES]
    for path in JL_FILES:
        bad = [(n.type, n.start_point) for n in _nodes(parser.parse(path.read_bytes()).root_node)
               if n.type == "ERROR" or n.is_missing]
        assert not bad, f"{path.relative_to(REPO)}: {bad[:3]}"
    assert parser.parse(b"function f(x)\n  x +\n").root_node.has_error  # the check can fail


PACKAGES = ("Flux", "Knet", "Random", "SHA", "Statistics", "LinearAlgebra")


def package_names(parser, path: Path) -> set[str]:
    """`Pkg.name` for every name imported from (or qualified by) an absolute package."""
    out = set()
    for n in _nodes(parser.parse(path.read_bytes()).root_node):
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
    assert "Flux.withgradient" in used and "Knet.@diff" in used  # the extraction sees both styles
    unverified = sorted(used - set(VERIFIED))
    assert not unverified, f"names not checked against the pinned sources: {unverified}"


def test_relative_imports_name_definitions(parser):
    """`using ..FluxTrainer: Trainer` and friends name things the included files define."""
    models = REPO / "julia_models"
    sources = {"DLRosetta": (models / "DLRosetta.jl").read_text(),
               "FluxTrainer": (models / "flux/trainer.jl").read_text(),
               "KnetTrainer": (models / "knet/trainer.jl").read_text()}
    for path in JL_FILES:
        for n in _nodes(parser.parse(path.read_bytes()).root_node):
            if n.type == "selected_import" and n.named_children[0].type == "import_path":
                module = n.named_children[0].text.decode().lstrip(".")
                for c in n.named_children[1:]:
                    name = c.text.decode()
                    pattern = (f"function {name}", f"{name}(", f"const {name}", f"struct {name}", f"{name} =")
                    assert any(p in sources[module] for p in pattern), f"{path.name}: {module} lacks {name}"


def test_julia_dependency_declarations_agree():
    """juliapkg.json (what juliacall installs) and Project.toml (plain Julia) declare the same packages."""
    import tomllib

    for fw, pinned in (("flux", {"Flux": "0.16", "CUDA": "5", "cuDNN": "1"}), ("knet", {"Knet": "=1.4.10"})):
        pkg = json.loads((REPO / f"julia_models/{fw}/juliapkg.json").read_text())
        toml = tomllib.loads((REPO / f"julia_models/{fw}/Project.toml").read_text())
        assert {k: v["uuid"] for k, v in pkg["packages"].items()} == toml["deps"]
        assert {k: v["version"] for k, v in pkg["packages"].items() if "version" in v} == \
               {k: v for k, v in toml["compat"].items() if k != "julia"}
        assert pinned.items() <= toml["compat"].items() and "SHA" in toml["deps"]


# --------------------------------------------------------------------------- data layout
def test_images_are_a_column_major_view_of_the_same_bytes():
    x = np.random.default_rng(0).random((5, 3, 4, 6), dtype=np.float32)
    j = L.images(x)
    assert j.shape == (6, 4, 3, 5) and j.flags.f_contiguous and np.shares_memory(j, x)
    assert j[2, 1, 0, 4] == x[4, 0, 1, 2]  # Julia's x[w, h, c, n] (0-based here) is numpy's x[n, c, h, w]
    assert L.raw(x).tobytes() == x.tobytes()


def test_labels_tokens_and_plans_are_one_based():
    y = np.array([0, 9, 3], dtype=np.int64)
    assert L.labels(y).tolist() == [1, 10, 4]
    t = np.array([[0, 0, 5], [7, 29_999, 1]], dtype=np.int64)  # (N=2, T=3), front-padded with 0
    j = L.tokens(t)
    assert j.shape == (3, 2) and j.flags.f_contiguous and j[:, 1].tolist() == [8, 30_000, 2]
    index = np.arange(12, dtype=np.int64).reshape(3, 4)  # 3 steps of batch 4
    plan = L.epoch_plan(index)
    assert plan.shape == (4, 3) and plan.flags.f_contiguous and (plan[:, 1] == index[1] + 1).all()
    assert L.logits(np.arange(6, dtype=np.float32).reshape(2, 3)).tolist() == [[0, 3], [1, 4], [2, 5]]


# --------------------------------------------------------------------------- weights
def random_weights(spec, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in spec.weight_shapes().items()}


@pytest.mark.parametrize("spec", [CNN, RESNET50, RNN], ids=lambda s: s.name)
@pytest.mark.parametrize("fw", ["flux", "knet"])
def test_weights_round_trip_bit_identical(fw, spec):
    w = random_weights(spec)
    native = L.to_julia(fw, spec, w)
    assert {k: a.shape for k, a in native.items()} == L.native_shapes(fw, spec)
    assert all(a.flags.f_contiguous and a.dtype == np.float32 for a in native.values())
    assert sum(a.size for a in native.values()) == sum(a.size for a in w.values())
    back = L.from_julia(fw, spec, native)
    assert list(back) == list(spec.weight_shapes())
    assert all(np.array_equal(back[k], w[k]) and back[k].flags.c_contiguous for k in w)


def test_knet_keeps_batchnorm_and_gru_packed():
    shapes = L.native_shapes("knet", RESNET50)
    assert shapes["bn1.params"] == (128,) and shapes["bn1.running_var"] == (1, 1, 64, 1)
    assert "bn1.weight" not in shapes and shapes["layer1.0.downsample.0.weight"] == (1, 1, 64, 256)
    assert L.native_shapes("knet", RNN)["gru.w"] == (1, 1, 68_100)
    assert L.native_shapes("flux", RNN)["embedding.weight"] == (125, 30_000)


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


@pytest.mark.parametrize("fw", ["flux", "knet"])
def test_converted_cnn_weights_reproduce_pytorch_logits(fw, torch_cnn):
    w, x, ref = torch_cnn
    out = L.logits(julia_cnn(L.to_julia(fw, CNN, w), L.images(x)))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_unflipped_kernels_would_be_caught(torch_cnn):
    w, x, ref = torch_cnn
    n = L.to_julia("flux", CNN, w)
    for k in ("conv1", "conv2", "conv3", "conv4"):
        n[f"{k}.weight"] = np.asfortranarray(w[f"{k}.weight"].T)  # a cross-correlation kernel, not flipped
    assert np.abs(L.logits(julia_cnn(n, L.images(x))) - ref).max() > 1e-2


def test_strided_stem_convolution_matches_pytorch():
    import torch

    rng = np.random.default_rng(2)
    x, w = rng.random((2, 3, 32, 32), dtype=np.float32), rng.standard_normal((64, 3, 7, 7)).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=3).numpy()
    out = nnlib_conv(L.images(x), L.conv_to_julia(w), pad=3, stride=2)  # WHCN (16, 16, 64, 2)
    np.testing.assert_allclose(out.T, ref, rtol=1e-4, atol=1e-4)


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def flux_gru_classifier(n, tokens):
    """julia_models/flux/rnn.jl's Classifier, in numpy: Flux's stacked (r, z, n) layout."""
    e = n["embedding.weight"][:, tokens - 1]  # (125, T, B): column id of the (125, 30000) table
    H = n["gru.weight_hh"].shape[1]
    h = np.zeros((H, tokens.shape[1]))
    for t in range(tokens.shape[0]):
        gi = n["gru.weight_ih"] @ e[:, t] + n["gru.bias_ih"][:, None]
        gh = n["gru.weight_hh"] @ h + n["gru.bias_hh"][:, None]
        r, z = sigmoid(gi[:H] + gh[:H]), sigmoid(gi[H:2 * H] + gh[H:2 * H])
        h = (1 - z) * np.tanh(gi[2 * H:] + r * gh[2 * H:]) + z * h
    return n["fc.weight"] @ h + n["fc.bias"][:, None]


def knet_rnnparam(w, X, H, gate_id, par):
    """Knet 1.4's rnnparam(r, 1, id, par) for a one-layer unidirectional GRU (src/ops20/rnn.jl)."""
    flat = w.reshape(-1, order="F")
    if par == 1:  # input matrices (X*H) for ids 1:3, hidden (H*H) for 4:6, stored transposed
        lengths = [X * H] * 3 + [H * H] * 3
        i2 = sum(lengths[:gate_id])
        return flat[i2 - lengths[gate_id - 1]:i2].reshape(-1, H, order="F")  # reshape(view(w, i1:i2), :, h)
    i1 = len(flat) - 6 * H + (gate_id - 1) * H  # 1 + length(w) - layers*ids*len + (id-1)*len, 0-based
    return flat[i1:i1 + H]


def knet_gru_classifier(n, tokens):
    """julia_models/knet/rnn.jl's Classifier, in numpy, with Knet's documented GRU equations."""
    X, H = 125, 100
    W = {i: knet_rnnparam(n["gru.w"], X, H, i, 1).T for i in range(1, 7)}  # rnnparam matrices are transposed
    b = {i: knet_rnnparam(n["gru.w"], X, H, i, 2)[:, None] for i in range(1, 7)}
    x = n["embedding.weight"][:, tokens.T - 1]  # emb[:, permutedims(tokens)]: (X, B, T)
    h = np.zeros((H, x.shape[1]))
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
    out = L.logits(forward(L.to_julia(fw, RNN, w), L.tokens(x)))
    np.testing.assert_allclose(out, trainer.predict(x), rtol=1e-4, atol=1e-4)


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
    if reason is not None:
        assert "\n" not in reason and "python -m harness setup --julia" in reason
        assert ("Knet 1.4.10" in reason) == (impl.name == "knet")


def test_run_fails_fast_with_the_reason(tmp_path):
    (impl,) = select("julia", "flux", None, "resnet50")
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
import importlib
ref = importlib.import_module(f"python_models.pytorch.{model}").build(spec, opts)   # torch after juliacall
out = {"param_count": t.param_count()}
w = ref.get_weights()
t.set_weights(w)
back = t.get_weights()
out["round_trip"] = all(np.array_equal(back[k], w[k]) for k in w)
rng = np.random.default_rng(0)
n, bs = 96, 32
if model == "rnn":
    x = rng.integers(0, 30000, (n, 150)).astype(np.int64)
else:
    x = rng.random((n, 3, 32, 32), dtype=np.float32)
y = rng.integers(0, spec.num_classes, n).astype(np.int64)
out["logits_max_abs_diff"] = float(np.abs(t.predict(x[:8]) - ref.predict(x[:8])).max())
t.fit_data(x, y); ref.fit_data(x, y)
out["digest_x"] = t.data_digest("x") == hashlib.sha256(x.tobytes()).hexdigest()
out["digest_y"] = t.data_digest("y") == hashlib.sha256(y.tobytes()).hexdigest()
plan = epoch_batches(n, bs, 0, 0)
out["losses"] = [float(v) for v in t.train_epoch(plan)]
out["torch_losses"] = [float(v) for v in ref.train_epoch(plan)]
print(json.dumps(out))
"""


@pytest.mark.parametrize("impl", JULIA, ids=lambda i: i.label)
def test_julia_model_against_pytorch(impl):
    """Through the runtime: parameter count, get->set->get, logits and three training steps on
    PyTorch's weights (dropout off), and the data digests computed in Julia."""
    reason = runtime.availability(impl)
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, "-c", CHECK, impl.name, impl.model], cwd=REPO,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["param_count"] == {"cnn": CNN, "resnet50": RESNET50, "rnn": RNN}[impl.model].param_count
    assert r["round_trip"] and r["digest_x"] and r["digest_y"]
    assert r["logits_max_abs_diff"] < 1e-4, r
    np.testing.assert_allclose(r["losses"], r["torch_losses"], rtol=1e-3)  # float32, 3 steps: 1e-3 relative
