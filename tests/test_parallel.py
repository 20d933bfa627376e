"""Data-parallel set-ups on CPU: two gloo processes for PyTorch, two XLA host devices for JAX and
Keras on JAX, two logical CPU devices for TensorFlow's MirroredStrategy (raw TF and Keras), two
cpu contexts for MXNet Gluon.

After a step the replicas hold identical weights, and the loss equals the one-process run on the
same global batch; bad set-ups are one clear line."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

PROBE = str(REPO / "tests" / "parallel_probe.py")


def needs(*modules: str) -> None:
    """Skip where a framework is not installed at all (a skip the conftest counts as a failure:
    CI installs every framework). Unlike importorskip, a framework that is installed but fails to
    import is not a skip: the test runs, and fails with the framework's own error."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: python3 -m harness setup --all")


def _run(cmd, **env):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_pytorch_ddp_two_gloo_processes_match_one_process(tmp_path):
    needs("torch")
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
          PROBE, "torch", str(tmp_path)])
    _run([sys.executable, PROBE, "torch-single", str(tmp_path)])
    r0, r1, one = (dict(np.load(tmp_path / f)) for f in ("torch-rank0.npz", "torch-rank1.npz", "torch-single-rank0.npz"))
    weights = [k for k in one if k not in ("losses", "seen", "moved")]
    for k in weights:
        assert r0[k].tobytes() == r1[k].tobytes(), f"replicas differ in {k}"
    # each replica trained on its own half of every global batch, together on all of it
    assert (r0["seen"][:, 0] == one["seen"][:, 0] / 2).all() and (r1["seen"][:, 0] == one["seen"][:, 0] / 2).all()
    np.testing.assert_allclose(r0["seen"][:, 1] + r1["seen"][:, 1], one["seen"][:, 1], rtol=1e-9)
    np.testing.assert_allclose(r0["losses"], one["losses"], rtol=1e-5)
    assert float(one["moved"]) > 0  # the steps changed the weights...
    for k in weights:  # ...the same way in two processes as in one
        np.testing.assert_allclose(r0[k], one[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_jax_mesh_two_host_devices_match_one_device(tmp_path):
    needs("jax")
    _run([sys.executable, PROBE, "jax", str(tmp_path)], XLA_FLAGS="--xla_force_host_platform_device_count=2")
    r = dict(np.load(tmp_path / "jax.npz"))
    assert bool(r["identical"]), "the two devices hold different parameters"
    np.testing.assert_allclose(r["losses2"], r["losses1"], rtol=1e-5)
    assert float(r["moved"]) > 0  # the steps changed the weights...
    assert float(r["max_diff"]) < 1e-5  # ...the same way on one device and on two


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def _two_nodes(cmd_for_rank, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Starts node 0 and node 1 together (each waits for the other), then collects both."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd_for_rank(r), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in (0, 1)]
    try:
        done = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, done)]


def _addresses(kind: str) -> str:
    ports = free_ports(2 if kind == "tensorflow" else 1)
    return ",".join(f"localhost:{p}" for p in ports)


MULTI_NODE_KINDS = [("jax", "jax"), ("keras-jax", "keras"), ("tensorflow", "tensorflow")]


@pytest.mark.parametrize("kind, module", MULTI_NODE_KINDS, ids=[k for k, _ in MULTI_NODE_KINDS])
def test_two_nodes_hold_identical_weights_and_match_one_process(tmp_path, kind, module):
    """Two processes joined by the framework's multi-node launch (jax.distributed,
    keras.distribution.initialize, MultiWorkerMirroredStrategy over TF_CONFIG), one CPU replica each."""
    needs(module)
    address = _addresses(kind)
    procs = _two_nodes(lambda r: [sys.executable, PROBE, f"nodes-{kind}", str(tmp_path), str(r), address])
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    _run([sys.executable, PROBE, f"single-{kind}", str(tmp_path)])
    r0, r1, one = (dict(np.load(tmp_path / f)) for f in (f"nodes-{kind}-rank0.npz", f"nodes-{kind}-rank1.npz",
                                                          f"single-{kind}-rank0.npz"))
    assert int(r0["replicas"]) == 2 and int(one["replicas"]) == 1
    weights = [k for k in one if k not in ("losses", "moved", "replicas")]
    for k in weights:
        assert r0[k].tobytes() == r1[k].tobytes(), f"the two nodes hold different {k}"
    np.testing.assert_allclose(r0["losses"], one["losses"], rtol=1e-5)  # the global batch's mean loss
    np.testing.assert_allclose(r1["losses"], one["losses"], rtol=1e-5)
    assert float(one["moved"]) > 0  # the steps changed the weights...
    for k in weights:  # ...the same way on two nodes as in one process
        np.testing.assert_allclose(r0[k], one[k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("framework, backend", [("jax", None), ("tensorflow", None), ("pytorch", None)])
def test_two_node_harness_run_writes_one_record_on_node_0(tmp_path, data_cache, framework, backend):
    """The README's multi-node command, both nodes on localhost: node 0 records the run with its
    setup; node 1 trains as a replica, says so and writes no record. PyTorch goes through torchrun's
    c10d rendezvous (no --node-rank: torchrun assigns the ranks, so either node may be node 0)."""
    needs({"pytorch": "torch"}.get(framework, framework))
    select = ["--framework", framework] + (["--backend", backend] if backend else [])
    join = (["--workers", _addresses("tensorflow")] if framework == "tensorflow"
            else ["--rdzv-endpoint", _addresses(framework)])
    torchrun = framework == "pytorch"
    procs = _two_nodes(lambda r: [sys.executable, "-m", "harness", *select, "--model", "cnn", "--data", "synthetic",
                                  "--samples", "256", "--epochs", "2", "--nodes", "2",
                                  *([] if torchrun else ["--node-rank", str(r)]), *join,
                                  "--data-dir", str(data_cache), "--out", str(tmp_path / f"node{r}"),
                                  "--format", "json", "--quiet"])
    assert [p.returncode for p in procs] == [0, 0], "\n".join(f"node {r}: {p.stdout[-3000:]}{p.stderr[-2000:]}"
                                                           for r, p in enumerate(procs))
    import json

    outs = [json.loads(p.stdout) for p in procs]
    first = 0 if not torchrun else [o["status"] for o in outs].index("ok")  # the node that got rank 0
    other = 1 - first
    record = outs[first]
    assert record["status"] == "ok" and record["data_seen"]["match"]
    setup = record["info"]["setup"]
    assert (setup["replicas"], setup["nodes"], setup["gpus_per_node"]) == (2, 2, 1)
    assert record["config"]["batch_size"] == 128  # weak scaling: the spec's 64 per replica
    if torchrun:
        assert setup["engine"].startswith("torchrun + DistributedDataParallel")
    else:
        assert record["config"]["extra"]["node_rank"] == 0
    assert len(list((tmp_path / f"node{first}").glob("*.json"))) == 1
    assert outs[other]["status"] == "replica"
    assert "trained as a replica of a 2-node run; its record is written on node 0" in procs[other].stderr
    assert not list((tmp_path / f"node{other}").glob("*.json"))
    if not torchrun:  # torchrun's other node holds no rank 0 that speaks to its harness: no epoch events
        assert outs[other]["epochs"][-1]["loss"] == record["epochs"][-1]["loss"]


def _one_process(kind, tmp_path, python=sys.executable, **env):
    """Runs the probe's two-replica and one-device steps; the replicas must match each other and it."""
    _run([str(python), PROBE, kind, str(tmp_path)], **env)
    r = dict(np.load(tmp_path / f"{kind}.npz"))
    assert int(r["replicas"]) == 2, r["engine"]
    assert bool(r["identical"]), f"the two replicas hold different weights ({r['engine']})"
    np.testing.assert_allclose(r["losses2"], r["losses1"], rtol=1e-5)  # the global batch's mean loss
    assert float(r["moved"]) > 0  # the steps changed the weights...
    assert float(r["max_diff"]) < 1e-5  # ...the same way on one device and on two


def test_tensorflow_mirrored_two_logical_cpus_match_one_device(tmp_path):
    needs("tensorflow")
    _one_process("tensorflow", tmp_path)


def test_keras_jax_data_parallel_two_host_devices_match_one_device(tmp_path):
    needs("keras")
    needs("jax")
    _one_process("keras-jax", tmp_path, XLA_FLAGS="--xla_force_host_platform_device_count=2")


def test_keras_tensorflow_mirrored_two_logical_cpus_match_one_device(tmp_path):
    needs("keras")
    needs("tensorflow")
    _one_process("keras-tensorflow", tmp_path)


def test_mxnet_gluon_two_cpu_contexts_match_one_context(tmp_path):
    from harness.interpreters import interpreter, missing_modules

    legacy = interpreter("legacy")
    if legacy is None:
        pytest.skip("the legacy environment (.venv-legacy, MXNet 1.9.1) is absent: python3 -m harness setup --all")
    if missing_modules("legacy", ("mxnet",)) != ():
        pytest.skip("mxnet is not importable in the legacy environment: python3 -m harness setup --all")
    _one_process("mxnet", tmp_path, python=legacy)


def _args(**kw):
    from harness.requests import DeviceSetup

    return DeviceSetup(**kw)


def test_bad_setups_are_clear_errors(monkeypatch):
    from harness import environment
    from harness.requests import check_setup as check_device
    from harness.errors import UsageError
    from harness.registry import select

    monkeypatch.setattr(environment, "gpus", lambda: [{"name": "NVIDIA H100", "memory_mib": 81559}])
    with pytest.raises(UsageError, match=r"--gpus 4: only 1 GPU\(s\) here"):
        check_device(_args(device="cuda", gpus=4))
    with pytest.raises(UsageError, match="--precision fp16 needs --device cuda"):
        check_device(_args(precision="fp16"))
    with pytest.raises(UsageError, match=r"--gpus 2: Keras 3 has no data-parallel path on the torch backend; "
                                         r"choices: --backend tensorflow \(MirroredStrategy\), --backend jax"):
        check_device(_args(gpus=2), select("python", "keras", "torch", "cnn"))
    with pytest.raises(UsageError, match=r"--gpus 2: r/keras\[jax\]/cnn trains in its own R loop .* "
                                         r"choices: --lang python --framework keras"):
        check_device(_args(gpus=2), select("r", "keras", "jax", "cnn"))
    with pytest.raises(UsageError, match="has no multi-device path; data-parallel frameworks: .*tensorflow"):
        check_device(_args(gpus=2), select("python", "chainer", None, "cnn"))
    for framework, backend in (("tensorflow", None), ("keras", "tensorflow"), ("keras", "jax"), ("mxnet", None)):
        check_device(_args(gpus=2), select("python", framework, backend, "cnn"))  # N CPU replicas: allowed
    check_device(_args(gpus=2), select("python", "pytorch", None, "cnn"))  # N CPU replicas: allowed
    check_device(_args(device="cuda", gpus=1, precision="fp16"), select("python", "jax", None, "cnn"))


def test_launch_gives_xla_host_devices_only_to_jax_engines(monkeypatch):
    from harness import parallel
    from harness.registry import select

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    options = dict(device="cpu", gpus=2, nodes=1)
    for framework, backend in (("jax", None), ("keras", "jax")):
        command, env = parallel.launch(select("python", framework, backend, "cnn")[0], options, "py", ["job"])
        assert command == ["py", "-m", "harness.worker", "job"]
        assert env == {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    for framework, backend in (("tensorflow", None), ("keras", "tensorflow"), ("mxnet", None)):
        command, env = parallel.launch(select("python", framework, backend, "cnn")[0], options, "py", ["job"])
        assert command == ["py", "-m", "harness.worker", "job"] and env == {}  # the framework splits the CPU
