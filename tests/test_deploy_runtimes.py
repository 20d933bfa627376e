"""The deployment runtimes (harness/deploy) compute what PyTorch computes, on the canonical probe weights.

Each model is exported here with torch.onnx.export (the dynamo exporter) from python_models/pytorch
on harness.equivalence.probe_weights; every installed runtime compiles it and its logits must match
PyTorch's eval-mode logits within the fp32 bound check 2 uses (rtol = atol = 1e-4). The TFLite files
for LiteRT come from the Keras models on the same weights through the TFLite converter
(tests/deploy_tflite.py). A runtime that is not installed skips with its install command.
int8: a CNN trained briefly on the learnable synthetic images, quantized on training examples
only, keeps MLPerf's 99 % of the fp32 accuracy; calibration that contains test examples is refused.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from harness import deploy
from harness.deploy import cache as deploy_cache
from harness.deploy.common import CalibrationError, CompileError, DeployOptions
from harness.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
BATCH = 4  # examples per compared batch (check 2 compares 8-16; a static-shape compile per batch size)
THREADS = 1
ONNX_RUNTIMES = [name for name, r in deploy.RUNTIMES.items() if "onnx" in r.formats]
CASES = [(rt, m) for rt in ONNX_RUNTIMES for m in ("cnn", "rnn", "resnet50")] + [("litert", "cnn"), ("litert", "rnn")]

# What these runtime versions cannot compile, with their own words (a fix upstream fails the test:
# then move the case back to the matrix and update harness/deploy's notes).
KNOWN_FAILURES = {
    ("tvm", "rnn"): "GRU",  # TVM 0.27's Relax ONNX frontend has no GRU converter: OpNotImplemented
    # IREE 3.13: a 3x3 stride-2 conv on a 2x2 input (layer4's first block at 32 px) fails in codegen
    # ("'linalg.generic' op inferred input/output operand #1 has shape's dimension #2 to be 4, but found 3");
    # at 64 px and more the same model compiles.
    ("iree", "resnet50"): "linalg.generic",
}


def need(runtime: str) -> None:
    why = deploy.availability(runtime)
    if why:
        pytest.skip(why)


def need_exporter() -> None:
    """torch.onnx.export's dynamo path translates with onnxscript."""
    if importlib.util.find_spec("onnxscript") is None:
        pytest.skip("torch.onnx.export needs onnxscript: pip install -e '.[onnx]'")


def options(tmp: Path, **kw) -> DeployOptions:
    return DeployOptions(threads=THREADS, cache_dir=tmp, **kw)


def tolerance(model: str) -> tuple[float, float]:
    from harness.equivalence import TOLERANCES

    return TOLERANCES[model].logits_rtol, TOLERANCES[model].logits_atol


def assert_logits(out: np.ndarray, ref: np.ndarray, model: str) -> None:
    rtol, atol = tolerance(model)
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------ exports
def torch_model(name: str, weights=None):
    import torch

    from harness.equivalence import probe_weights
    from harness.protocol import RunOptions
    from harness.specs import get_spec

    spec = get_spec(name)
    trainer = importlib.import_module(f"python_models.pytorch.{name}").build(spec, RunOptions())
    trainer.set_weights(probe_weights(spec) if weights is None else weights)
    torch.set_num_threads(THREADS)
    return trainer


def inputs(name: str, n: int = BATCH, stream: int = 0) -> np.ndarray:
    from harness.data import synthetic

    make = synthetic.tokens if name == "rnn" else synthetic.images
    return make(n, seed=0, stream=stream)[0]


def export_onnx(model, example: np.ndarray, path: Path) -> Path:
    import torch

    need_exporter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.from_numpy(example),), str(path), dynamo=True, input_names=["x"],
                          output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return path


def once(tmp_path_factory, name: str, make) -> Path:
    """A folder made once per test session, shared by the xdist workers (a lock file; fcntl): each
    export is made by whichever worker asks first, the other waits and reuses it."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:  # every worker's basetemp lies in the session's one
        root = root.parent
    folder = root / "deploy-shared" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / "done").touch()
    return folder


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """exported(model, fmt) -> (path, x, PyTorch eval logits); each export made once per session."""

    @functools.lru_cache(maxsize=None)
    def get(name: str, fmt: str = "onnx"):
        x = inputs(name)
        if fmt == "onnx":
            need_exporter()

            def make(folder: Path):
                trainer = torch_model(name)
                np.save(folder / "logits.npy", trainer.predict(x))
                export_onnx(trainer.model, x, folder / f"{name}.onnx")

            folder = once(tmp_path_factory, f"{name}-onnx", make)
            return folder / f"{name}.onnx", x, np.load(folder / "logits.npy")
        ref = get(name, "onnx")[2]
        if any(importlib.util.find_spec(m) is None for m in ("tensorflow", "keras")):
            pytest.skip("the TFLite files come from Keras on TensorFlow: pip install -e '.[tensorflow,keras]'")

        def convert(folder: Path):
            proc = subprocess.run([sys.executable, str(REPO / "tests" / "deploy_tflite.py"), str(folder), str(BATCH), name],
                                  capture_output=True, text=True, timeout=600, cwd=REPO)
            assert proc.returncode == 0, proc.stderr[-3000:]

        folder = once(tmp_path_factory, f"{name}-tflite", convert)
        nhwc = x.transpose(0, 2, 3, 1).copy() if x.ndim == 4 else x  # Keras' layout
        return folder / f"{name}.tflite", nhwc, ref

    return get


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One compiled-artefact cache for the session's workers (entries are renamed into place whole)."""
    return once(tmp_path_factory, "cache", lambda folder: None)


# ------------------------------------------------------------------------------------------ the matrix
@pytest.mark.parametrize("runtime, model", CASES, ids=[f"{r}-{m}" for r, m in CASES])
def test_runtime_logits_match_pytorch(runtime, model, exported, shared_cache):
    need(runtime)
    fmt = deploy.RUNTIMES[runtime].formats[0]
    path, x, ref = exported(model, fmt)
    compile_ = deploy.load(runtime).compile
    if (runtime, model) in KNOWN_FAILURES:
        with pytest.raises(CompileError) as err:
            compile_(path, fmt, x, options(shared_cache))
        assert KNOWN_FAILURES[runtime, model] in str(err.value)
        assert err.value.__cause__ is not None and not isinstance(err.value.__cause__, CompileError)
        return
    compiled = compile_(path, fmt, x, options(shared_cache))
    assert_logits(compiled.run(x), ref, model)
    info = compiled.info
    assert info["runtime"] == runtime and info["version"] and info["precision"] == "fp32"
    assert info["threads"] == THREADS and str(THREADS) in info["threads_applied"]
    assert info["compile_s"] > 0 and ("cache" in info or "cache_by_batch" in info)
    if runtime == "openvino":  # its CPU plugin defaults to bf16 on a CPU with AVX512_BF16: fp32 is asked for
        assert info["inference_precision"] == "f32"


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES + ["litert"])
def test_single_example_batch(runtime, exported, shared_cache):
    """Single-stream latency runs batch 1: dynamic runtimes take it, static ones compile it once more."""
    need(runtime)
    fmt = deploy.RUNTIMES[runtime].formats[0]
    path, x, ref = exported("cnn", fmt)
    compiled = deploy.load(runtime).compile(path, fmt, x, options(shared_cache))
    assert_logits(compiled.run(x[:1]), ref[:1], "cnn")
    assert_logits(compiled.run(x), ref, "cnn")  # the first batch size still runs after another


def test_litert_refuses_other_batch_of_fixed_batch_file(exported, shared_cache):
    """Resizing a fixed-batch TFLite GRU returns the converted batch's rows: refused, never silently wrong."""
    need("litert")
    path, x, ref = exported("rnn", "tflite")
    compiled = deploy.load("litert").compile(path, "tflite", x, options(shared_cache))
    with pytest.raises(CompileError, match=f"fixed batch of {BATCH}"):
        compiled.run(x[:1])


# ------------------------------------------------------------------------------------- precisions
@pytest.mark.parametrize("runtime, precision", [("openvino", "bf16"), ("iree", "bf16")])
def test_reduced_precision_is_applied_and_close(runtime, precision, exported, shared_cache):
    need(runtime)
    path, x, ref = exported("cnn", "onnx")
    compile_ = deploy.load(runtime).compile
    if runtime == "openvino":
        import openvino as ov

        if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            with pytest.raises(CompileError, match="would run"):
                compile_(path, "onnx", x, options(shared_cache, precision=precision))
            return
    out = compile_(path, "onnx", x, options(shared_cache, precision=precision)).run(x)
    fp32 = compile_(path, "onnx", x, options(shared_cache)).run(x)
    scale = np.abs(ref).max()
    assert np.abs(out - ref).max() < 0.05 * scale  # bf16 keeps 8 bits: about 1e-2 relative over a few layers
    assert not np.allclose(out, fp32, rtol=1e-5, atol=1e-5 * scale)  # the precision was really lowered
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.75


def test_openvino_fp16_on_a_cpu_without_fp16_is_refused(exported, shared_cache):
    need("openvino")
    import openvino as ov

    path, x, _ = exported("cnn", "onnx")
    if "FP16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU runs f16: nothing to refuse")
    with pytest.raises(CompileError, match="asked for f16"):
        deploy.load("openvino").compile(path, "onnx", x, options(shared_cache, precision="fp16"))


def test_precision_choices_are_checked_before_a_worker():
    deploy.check_precision("openvino", "int8")
    with pytest.raises(UsageError, match=r"precision 'int8' for tvm on cpu; choices: fp32"):
        deploy.check_precision("tvm", "int8")
    with pytest.raises(UsageError, match="choices: fp32"):
        deploy.check_precision("litert", "fp16")
    with pytest.raises(UsageError, match="unknown runtime 'tensorrt'; choices: onnxruntime, openvino, tvm, iree, litert"):
        deploy.check_precision("tensorrt", "fp32")


def test_gpu_paths_are_refused_where_this_build_has_none(exported, tmp_path):
    deploy.check_precision("onnxruntime", "fp16", "cuda")
    with pytest.raises(UsageError, match="OpenVINO has no cuda path here"):
        deploy.check_precision("openvino", "fp32", "cuda")
    need("onnxruntime")
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has the CUDA provider")
    path, x, _ = exported("cnn", "onnx")
    with pytest.raises(CompileError, match=r"no GPU provider .*onnxruntime-gpu"):
        deploy.load("onnxruntime").compile(path, "onnx", x, options(tmp_path, device="cuda"))


# ------------------------------------------------------------------------------------------ int8
@pytest.fixture(scope="session")
def trained_cnn(tmp_path_factory):
    """A CNN trained three epochs on 512 learnable synthetic images, exported; with train and test sets.

    From the spec's initialisation at lr 0.03 (the spec's 0.01 needs four epochs): the recipe does not
    matter here, only that the model is a trained one with confident, learnt decision margins."""
    import torch

    from harness.data import synthetic
    from harness.protocol import RunOptions, epoch_batches
    from harness.specs import get_spec

    x_train, y_train = synthetic.images(512, seed=0)
    x_test, y_test = synthetic.images(256, seed=0, stream=synthetic.TEST_SEED_OFFSET)
    need_exporter()

    def train(folder: Path):
        torch.set_num_threads(THREADS)
        trainer = importlib.import_module("python_models.pytorch.cnn").build(get_spec("cnn"), RunOptions())
        for group in trainer.optimizer.param_groups:
            group["lr"] = 0.03
        trainer.fit_data(x_train, y_train)
        for epoch in range(3):
            trainer.train_epoch(epoch_batches(len(x_train), 64, seed=0, epoch=epoch))
        accuracy = float((trainer.predict(x_test).argmax(1) == y_test).mean())
        assert accuracy > 0.5, accuracy  # learnable: chance is 0.1 (measured: 1.0)
        export_onnx(trainer.model, x_test[:BATCH], folder / "cnn.onnx")

    return once(tmp_path_factory, "trained-cnn", train) / "cnn.onnx", x_train, x_test, y_test


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_keeps_99_percent_of_fp32_accuracy(runtime, trained_cnn, tmp_path):
    need(runtime)
    path, x_train, x_test, y_test = trained_cnn
    compile_ = deploy.load(runtime).compile
    calibration = deploy.calibration_examples(x_train, 64)
    fp32 = compile_(path, "onnx", x_test[:BATCH], options(tmp_path))
    int8 = compile_(path, "onnx", x_test[:BATCH], options(tmp_path, precision="int8", calibration=calibration,
                                                            held_out=x_test))
    logits32 = np.concatenate([fp32.run(b) for b in np.split(x_test, 8)])
    logits8 = np.concatenate([int8.run(b) for b in np.split(x_test, 8)])
    acc32, acc8 = (float((y.argmax(1) == y_test).mean()) for y in (logits32, logits8))
    rule = deploy.mlperf_rule(acc8, acc32)
    assert rule["kept"], rule
    assert not np.allclose(logits8, logits32, rtol=1e-4, atol=1e-4)  # it really is another (quantized) model
    assert int8.info["precision"] == "int8" and int8.info["quantization"]["calibration_examples"] == 64


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_refuses_test_examples_in_calibration(runtime, trained_cnn, tmp_path):
    need(runtime)
    path, x_train, x_test, _ = trained_cnn
    compile_ = deploy.load(runtime).compile
    planted = np.concatenate([x_train[:60], x_test[100:104]])  # 4 test examples among 64
    with pytest.raises(CalibrationError, match="4 of 64 calibration examples are test examples"):
        compile_(path, "onnx", x_test[:BATCH], options(tmp_path, precision="int8", calibration=planted, held_out=x_test))
    with pytest.raises(CalibrationError, match="held-out"):
        compile_(path, "onnx", x_test[:BATCH], options(tmp_path, precision="int8", calibration=x_train[:64]))
    with pytest.raises(CalibrationError, match="training set"):
        compile_(path, "onnx", x_test[:BATCH], options(tmp_path, precision="int8", held_out=x_test))
    assert not any(tmp_path.rglob("*.onnx")) and not any(tmp_path.rglob("*.xml"))  # refused before quantizing


def test_mlperf_rule():
    assert deploy.mlperf_rule(0.990, 1.0)["kept"] and not deploy.mlperf_rule(0.989, 1.0)["kept"]
    r = deploy.mlperf_rule(0.75, 0.80)
    assert r["ratio"] == pytest.approx(0.9375) and r["target"] == 0.99 and not r["kept"]


def test_calibration_examples_come_from_the_training_set_in_a_seeded_order():
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    a, b = deploy.calibration_examples(x, 10, seed=1), deploy.calibration_examples(x, 10, seed=1)
    assert np.array_equal(a, b) and len(np.unique(a)) == 10 and set(a.ravel()) <= set(x.ravel())
    assert not np.array_equal(a, deploy.calibration_examples(x, 10, seed=2))


# ------------------------------------------------------------------------------------------ cache
CACHED = ["openvino", "tvm", "iree"]  # the runtimes that keep a compiled artefact


@pytest.mark.parametrize("runtime", CACHED)
def test_compiled_artefact_is_reused_and_verified(runtime, exported, tmp_path):
    need(runtime)
    path, x, ref = exported("cnn", "onnx")
    compile_ = deploy.load(runtime).compile

    def status(compiled):
        info = compiled.info
        return info["cache"]["status"] if "cache" in info else info["cache_by_batch"][BATCH]["status"]

    first = compile_(path, "onnx", x, options(tmp_path))
    assert status(first) == "miss"
    second = compile_(path, "onnx", x, options(tmp_path))
    assert status(second) == "hit"
    assert_logits(second.run(x), ref, "cnn")
    # Corrupt the artefact: the digest check refuses it and the entry is rebuilt, never loaded.
    artefact = max((p for p in (tmp_path / runtime).rglob("*") if p.is_file() and p.name != "manifest.json"),
                   key=lambda p: p.stat().st_size)
    data = bytearray(artefact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt = artefact.with_name("corrupt.tmp")
    corrupt.write_bytes(bytes(data))
    corrupt.replace(artefact)  # a new file: the loaded one may be memory-mapped by this process
    third = compile_(path, "onnx", x, options(tmp_path))
    assert status(third) == f"rebuilt: {artefact.name} digest mismatch"
    assert_logits(third.run(x), ref, "cnn")
    # The refused entry was replaced, not kept beside the new one.
    assert len([p for p in (tmp_path / runtime).iterdir() if not p.name.startswith(".")]) == 1
    # The same graph with other weights (the dynamo exporter keeps them in cnn.onnx.data) is another model.
    other = tmp_path / "other"
    shutil.copytree(path.parent, other, ignore=shutil.ignore_patterns("tflite"))
    weights = other / "cnn.onnx.data"
    assert weights.is_file()
    data = np.fromfile(weights, np.float32)
    (data * np.float32(1.5)).tofile(weights)
    fourth = compile_(other / "cnn.onnx", "onnx", x, options(tmp_path))
    assert status(fourth) == "miss"
    assert not np.allclose(fourth.run(x), ref, rtol=1e-2, atol=1e-2)


def test_cache_keys_and_refusals(tmp_path):
    builds = []

    def build(out: Path):
        builds.append(out)
        (out / "a.bin").write_bytes(b"compiled")

    key = {"model_sha256": "ab" * 32, "runtime": "1.0", "target": "x86", "precision": "fp32"}
    assert deploy_cache.cached(tmp_path, "rt", key, build).status == "miss"
    assert deploy_cache.cached(tmp_path, "rt", key, build).status == "hit"
    for change in ({"runtime": "1.1"}, {"target": "arm"}, {"precision": "int8"}, {"model_sha256": "cd" * 32}):
        assert deploy_cache.cached(tmp_path, "rt", {**key, **change}, build).status == "miss"
    entry = deploy_cache.cached(tmp_path, "rt", key, build)
    (entry.path / "a.bin").unlink()
    assert deploy_cache.cached(tmp_path, "rt", key, build).status == "rebuilt: a.bin missing"
    assert len(builds) == 6

    def broken(out: Path):
        (out / "partial.bin").write_bytes(b"x")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError):
        deploy_cache.cached(tmp_path, "rt", {**key, "target": "riscv"}, broken)
    assert not (tmp_path / "rt" / deploy_cache.key_digest({**key, "target": "riscv"})).exists()
    assert not [p for p in (tmp_path / "rt").iterdir() if p.name.startswith(".")]  # no half-built entry left


# ------------------------------------------------------------------------------------------ bad input
def test_availability_names_the_install_command(monkeypatch):
    for name, rt in deploy.RUNTIMES.items():
        why = deploy.availability(name)
        assert why is None or (rt.install in why and "not installed" in why)
    monkeypatch.setitem(deploy.RUNTIMES, "iree", deploy.Runtime(
        "iree", "IREE", ("onnx",), ("fp32",), "iree", "harness.deploy.iree", ("iree_not_here.runtime",)))
    assert deploy.availability("iree") == "IREE is not installed (iree_not_here.runtime missing): pip install -e '.[iree]'"
    with pytest.raises(UsageError, match="unknown runtime 'tensorrt'"):
        deploy.availability("tensorrt")


def test_parent_side_imports_no_runtime():
    """availability/check_precision run in the parent before any worker: no runtime is imported there."""
    code = ("import sys; from harness import deploy\n"
            "[deploy.availability(n) for n in deploy.RUNTIMES]; deploy.check_precision('iree', 'bf16')\n"
            "print([m for m in ('onnx', 'onnxruntime', 'openvino', 'nncf', 'tvm', 'iree.compiler', 'iree.runtime', 'ai_edge_litert', 'torch')"
            " if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def bad_files(tmp: Path) -> dict[str, Path]:
    import onnx
    from onnx import TensorProto, helper

    garbage = tmp / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH, 3])])
    unknown = tmp / "unknown_op.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.example", 1)])
    model.ir_version = 10  # what torch.onnx.export writes; onnx 1.23's default (14) is newer than onnxruntime 1.31 reads
    onnx.save(model, str(unknown))
    return {"garbage": garbage, "unknown_op": unknown}


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
@pytest.mark.parametrize("kind", ["garbage", "unknown_op"])
def test_malformed_model_raises_the_runtimes_own_message(runtime, kind, tmp_path):
    need(runtime)
    path = bad_files(tmp_path)[kind]
    x = np.zeros((BATCH, 3), np.float32)
    with pytest.raises(CompileError) as err:
        deploy.load(runtime).compile(path, "onnx", x, options(tmp_path / "cache"))
    cause = err.value.__cause__
    assert err.value.runtime == runtime and cause is not None and not isinstance(cause, CompileError)
    assert str(cause).strip()[:200] in str(err.value) or str(cause).splitlines()[0][:200] in str(err.value)
    if kind == "unknown_op":
        assert "Frobnicate" in str(err.value)


def test_litert_malformed_file_raises_its_message(tmp_path):
    need("litert")
    path = tmp_path / "garbage.tflite"
    path.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(CompileError) as err:
        deploy.load("litert").compile(path, "tflite", np.zeros((1, 3), np.float32), options(tmp_path))
    assert err.value.__cause__ is not None and str(err.value.__cause__)[:100] in str(err.value)


def test_wrong_format_is_refused(exported, tmp_path):
    need("openvino")
    with pytest.raises(CompileError, match="not tflite"):
        deploy.load("openvino").compile(tmp_path / "m.tflite", "tflite", np.zeros((1, 3), np.float32), options(tmp_path))
