"""harness.slurm against real Slurm daemons (tests/slurm_cluster.py), and its parsers on their own.

Through the one-node cluster: two tiny planned runs submitted with sbatch land as two records in
the store, each naming its suite plan, repeat, job and node; a job cancelled mid-run with scancel
becomes a failed record with the scheduler's reason (written once) and is what a resume submits
again; an unknown partition is refused in one line before anything is submitted; srun's two tasks
read their rank, count and endpoint from Slurm's environment, and two harness processes started
that way train one JAX run as two nodes and write one record on rank 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO
from slurm_cluster import slurm_cluster  # noqa: F401 (the fixture)

from harness import slurm
from harness.errors import UsageError

TINY = "--data synthetic --samples 64 --epochs 1"


def planned_runs(tmp_path, name: str, options: dict, repeats: int, implementations=("python/pytorch",),
                 models=("cnn",)) -> list[slurm.PlannedRun]:
    """A suite file as the suite command reads it, expanded into its planned runs."""
    from harness import suites

    lines = [f"repeats = {repeats}", f"models = {json.dumps(list(models))}",
             f"implementations = {json.dumps(list(implementations))}", "[options]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    suite = suites.load(str(path))
    return [slurm.planned(entry, suite.name, repeat) for entry, repeat in suite.schedule()]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ---- parsers and scripts, no daemons -----------------------------------------------------------

def test_expand_hostlist_and_task_counts():
    assert slurm.expand_hostlist("node[01-04,07]") == ["node01", "node02", "node03", "node04", "node07"]
    assert slurm.expand_hostlist("gpu[9-11],login1") == ["gpu9", "gpu10", "gpu11", "login1"]
    assert slurm.expand_hostlist("a[1-2]b[3-4]") == ["a1b3", "a1b4", "a2b3", "a2b4"]
    assert slurm.expand_hostlist("vm") == ["vm"]
    assert slurm.expand_counts("2(x3),1") == [2, 2, 2, 1]
    with pytest.raises(ValueError):
        slurm.expand_hostlist("node[a-b]")


def test_slurm_environment_places_tasks_block_by_block():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "gpu[07-08]",
           "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
    place = slurm.slurm_environment(env)
    assert place == (3, 4, "gpu07", ("gpu07", "gpu07", "gpu08", "gpu08"))
    assert slurm.slurm_environment({}) is None  # not under srun
    assert slurm.launch_defaults(4, port=1234, env=env) == {
        "node_rank": 3, "rdzv_endpoint": "gpu07:1234",
        "workers": ["gpu07:1234", "gpu07:1235", "gpu08:1236", "gpu08:1237"]}
    with pytest.raises(UsageError, match=r"--nodes 2: this srun step has 4 task\(s\)"):
        slurm.launch_defaults(2, env=env)


def test_fill_from_slurm_sets_only_the_flags_each_launch_needs():
    import argparse

    from harness.registry import select

    env = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "1(x2)"}

    def args(**kw):
        return argparse.Namespace(**{"nodes": 2, "node_rank": None, "rdzv_endpoint": None, "workers": None, **kw})

    a = args()
    assert slurm.fill_from_slurm(a, select("python", "jax", None, "cnn"), env=env) == {
        "rdzv_endpoint": "n1:29500", "node_rank": 1}
    assert a.workers is None  # JAX has no use for TensorFlow's worker list
    a = args(workers=["h0:1", "h1:1"])
    assert slurm.fill_from_slurm(a, select("python", "tensorflow", None, "cnn"), env=env) == {"node_rank": 1}
    assert a.workers == ["h0:1", "h1:1"]  # what the user gave wins
    assert slurm.fill_from_slurm(args(), select("python", "pytorch", None, "cnn"), env=env) == {
        "rdzv_endpoint": "n1:29500"}  # torchrun assigns its own ranks
    assert slurm.fill_from_slurm(args(nodes=1), select("python", "jax", None, "cnn"), env=env) == {}
    assert slurm.fill_from_slurm(args(), select("python", "jax", None, "cnn"), env={}) == {}  # not under srun


def test_scheduler_rows_parse_with_their_states():
    rows = slurm.parse_squeue("12|dlr-s-0123456789ab-r1|TIMEOUT|TimeLimit|vm|2026-01-01T00:00:00|2026-01-01T00:01:00\n"
                              "13|dlr-s-0123456789ab-r2|PENDING|Priority||N/A|N/A\n")
    assert [(j.job_id, j.state, j.reason, j.phase) for j in rows] == [
        ("12", "TIMEOUT", "TimeLimit", "ended"), ("13", "PENDING", "Priority", "queued")]
    acct = slurm.parse_sacct("14|dlr-s-0123456789ab-r0|CANCELLED by 1000|None|n1|x|y\n")
    assert (acct[0].state, acct[0].phase) == ("CANCELLED", "ended")
    assert slurm.parse_job_name("dlr-python-cnn-0123456789ab-r2") == ("python-cnn", "0123456789ab", 2)
    assert slurm.parse_job_name("someone-elses-job") is None


def test_batch_script_runs_the_planned_run_with_its_plan(tmp_path):
    run = planned_runs(tmp_path, "tiny", {"data": "synthetic", "samples": 64, "epochs": 1}, 2)[1]
    options = slurm.SbatchOptions(partition="gpu", account="proj", time="00:10:00", gres="gpu:8",
                                  extra=("--qos=high",))
    script = slurm.batch_script(run, tmp_path / "store", options, python="/venv/bin/python", repo=REPO)
    name = slurm.job_name(run.plan)
    assert slurm.parse_job_name(name) == ("tiny", run.plan["config"], 1)
    for directive in (f"--job-name={name}", "--exclusive", "--partition=gpu", "--account=proj", "--time=00:10:00",
                      "--gres=gpu:8", "--qos=high", f"--output={tmp_path.resolve()}/store/slurm/logs/%j.out"):
        assert f"#SBATCH {directive}\n" in script
    assert ("exec /venv/bin/python -m harness run " + " ".join(run.run_args)
            + f" --out {tmp_path.resolve()}/store --quiet") in script
    # bash reads the plan back as JSON, with the job's id in front
    export = next(line for line in script.splitlines() if line.startswith("export DL_ROSETTA_PLAN="))
    out = subprocess.run(["bash", "-c", f'{export}; printf %s "$DL_ROSETTA_PLAN"'], capture_output=True, text=True,
                         env=dict(os.environ, SLURM_JOB_ID="4242"), check=True).stdout
    assert json.loads(out) == {**run.plan, "slurm_job": "4242"}


def test_batch_script_of_a_multi_node_gpu_row_starts_one_harness_per_node(tmp_path):
    import argparse

    from harness.registry import select

    impl = select("python", "jax", None, "resnet50")[0]
    run_args = ["--lang", "python", "--framework", "jax", "--model", "resnet50", "--device", "cuda", "--gpus", "8",
                "--nodes", "2"]
    run = slurm.PlannedRun({"suite": "gpu", "config": "0123456789ab", "repeat": 0, "run_args": run_args}, impl,
                           argparse.Namespace(device="cuda", gpus=8, nodes=2), run_args)
    script = slurm.batch_script(run, tmp_path, python="py")
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n" in script
    assert "#SBATCH --gres=gpu:8\n" in script  # the row's GPUs, where --gres was not given
    assert "\nexec srun --kill-on-bad-exit=1 py -m harness run " + " ".join(run_args) in script
    assert "--gres" not in slurm.batch_script(run, tmp_path, slurm.SbatchOptions(gres="none"), python="py")


def test_a_forgotten_job_becomes_one_failed_record(tmp_path, monkeypatch):
    """A job the controller no longer remembers (no accounting) and that left no record is a
    failed row, written once; resume submits it again."""
    from harness import results

    run = planned_runs(tmp_path, "tiny", {"data": "synthetic", "samples": 64, "epochs": 1}, 1)[0]
    store = tmp_path / "store"
    monkeypatch.setattr(slurm, "_slurm", lambda cmd, what, check=True: subprocess.CompletedProcess(
        cmd, 0, "77\n" if cmd[0] == "sbatch" else "", ""))
    slurm.submit(run, store)
    states = slurm.status(store, [run])
    assert [s.state for s in states] == ["failed"]
    assert states[0].reason.startswith("Slurm UNKNOWN: job 77 is no longer known to the scheduler")
    assert slurm.status(store, [run])[0].state == "failed"
    index = results.index(store)
    assert len(index) == 1 and index["status"].tolist() == ["failed"]  # written once, read back as a run
    assert slurm.to_submit(states) == [run]


# ---- against the daemons ---------------------------------------------------------------------

def test_hostlist_matches_scontrol(slurm_cluster):  # noqa: F811
    for text in ("node[01-04,07]", "gpu[9-11],login1", "a[1-2]b[3-4]"):
        proc = slurm_cluster.run("scontrol", "show", "hostnames", text)
        assert proc.returncode == 0, proc.stderr
        assert slurm.expand_hostlist(text) == proc.stdout.split()


def test_two_planned_runs_land_in_the_store(tmp_path, data_cache, slurm_cluster):  # noqa: F811
    from harness import results

    runs = planned_runs(tmp_path, "slurm-tiny", {"data": "synthetic", "samples": 64, "epochs": 1}, 2)
    store = tmp_path / "store"
    submitted = slurm.submit_all(runs, store, slurm.SbatchOptions(partition=slurm_cluster.partition, time="10"))
    assert len({s.job_id for s in submitted}) == 2
    states = slurm.wait(store, runs, poll=1, timeout=240)
    logs = {s.job_id: slurm._tail(slurm.log_path(store, s.job_id)) for s in submitted}
    assert [s.state for s in states] == ["done", "done"], (slurm.format_status(states), logs)
    records = [r for r in results.read_records([store]) if r["status"] == "ok"]
    assert len(records) == 2
    by_repeat = {r["plan"]["repeat"]: r for r in records}
    for repeat, sub in enumerate(submitted):
        record = by_repeat[repeat]
        assert slurm.plan_key(record["plan"]) == ("slurm-tiny", runs[repeat].plan["config"], repeat)
        assert record["plan"]["slurm_job"] == sub.job_id
        assert record["config"]["repeat"] == repeat
        assert record["environment"]["hostname"] == slurm_cluster.node  # the record names the node
    assert slurm.to_submit(states) == []
    assert len(results.read_records([store])) == 2  # status wrote nothing more
    table = slurm.format_status(slurm.status(store, runs))
    assert table.splitlines()[-1] == "2 done"


def test_cancelled_job_is_a_failed_record_with_the_reason(tmp_path, data_cache, slurm_cluster):  # noqa: F811
    from harness import results

    # long enough to be cancelled mid-run: a couple of minutes of training on this machine
    runs = planned_runs(tmp_path, "slurm-long", {"data": "synthetic", "samples": 2048, "epochs": 30}, 1)
    store = tmp_path / "store"
    [sub] = slurm.submit_all(runs, store, slurm.SbatchOptions(partition=slurm_cluster.partition))
    log = slurm.log_path(store, sub.job_id)
    wait_for(lambda: slurm.status(store, runs)[0].state == "running" and log.exists()
             and "[slurm] job" in log.read_text(), 120, "the job to run")
    wait_for(lambda: list((store / "logs").glob("*.log")), 60, "the harness to start its worker")  # mid-run
    slurm.cancel([sub.job_id])

    def ended():
        states = slurm.status(store, runs)
        return states if states[0].state == "failed" else None

    states = wait_for(ended, 60, "the cancelled job to end")
    assert states[0].job.state == "CANCELLED"
    assert states[0].reason.startswith(f"Slurm CANCELLED: job {sub.job_id} on {slurm_cluster.node} cancelled")
    [record] = results.read_records([store])
    assert record["status"] == "failed" and record["plan"]["slurm_job"] == sub.job_id
    assert slurm.plan_key(record["plan"]) == runs[0].key
    assert record["config"]["epochs"] == 30 and record["config"]["n_train"] == 2048
    assert "[slurm] job" in record["log_tail"]
    slurm.status(store, runs)
    assert len(results.read_records([store])) == 1  # once, however often status is asked
    assert slurm.to_submit(states) == runs  # what --resume submits again


def test_unknown_partition_is_one_line_and_submits_nothing(tmp_path, slurm_cluster):  # noqa: F811
    runs = planned_runs(tmp_path, "tiny", {"data": "synthetic", "samples": 64, "epochs": 1}, 1)
    with pytest.raises(UsageError) as e:
        slurm.submit_all(runs, tmp_path / "store", slurm.SbatchOptions(partition="nope"))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("--partition nope: Slurm refused it (")
    assert message.endswith(f"choices: {slurm_cluster.partition}")
    assert not (tmp_path / "store").exists()


PROBE = "import json; from harness.slurm import slurm_environment; print(json.dumps(slurm_environment()))"


def test_srun_tasks_read_rank_count_and_endpoint(slurm_cluster):  # noqa: F811
    proc = slurm_cluster.run("srun", "-N", "1", "-n", "2", "--chdir", str(REPO), sys.executable, "-c", PROBE,
                             timeout=120)
    assert proc.returncode == 0, proc.stderr
    places = sorted(json.loads(line) for line in proc.stdout.splitlines())
    node = slurm_cluster.node
    assert places == [[0, 2, node, [node, node]], [1, 2, node, [node, node]]]


# Until `python -m harness run --nodes K` takes its rank and endpoint from Slurm itself, each task
# turns them into flags with launch_defaults (the same values the run command will use).
LAUNCH = """
import os, sys
from harness.slurm import launch_defaults
d = launch_defaults(2, port=int(sys.argv[1]))
os.execv(sys.executable, [sys.executable, "-m", "harness", *sys.argv[2:], "--nodes", "2",
                          "--node-rank", str(d["node_rank"]), "--rdzv-endpoint", d["rdzv_endpoint"]])
"""


def test_srun_two_tasks_train_one_jax_run_recorded_on_rank_0(tmp_path, data_cache, slurm_cluster):  # noqa: F811
    pytest.importorskip("jax")
    from test_parallel import free_ports

    [port] = free_ports(1)
    proc = slurm_cluster.run(
        "srun", "-N", "1", "-n", "2", "--kill-on-bad-exit=1", "--chdir", str(REPO), sys.executable, "-c", LAUNCH,
        str(port), "--framework", "jax", "--model", "cnn", *TINY.split(), "--data-dir", str(data_cache),
        "--out", str(tmp_path / "store"), "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "trained as a replica of a 2-node run; its record is written on node 0" in proc.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "store").glob("*.json")]
    assert len(records) == 1 and records[0]["status"] == "ok"
    assert records[0]["config"]["extra"]["node_rank"] == 0
    assert records[0]["info"]["setup"]["replicas"] == 2


def test_run_refuses_a_plan_its_options_do_not_match(tmp_path, data_cache):
    """A batch job whose run arguments no longer give its plan's digest is one line, exit 2."""
    from conftest import harness

    plan = {"suite": "s", "config": "000000000000", "repeat": 1}
    os.environ["DL_ROSETTA_PLAN"] = json.dumps({"slurm_job": "9", **plan})
    try:
        proc = harness("run", "--framework", "pytorch", *TINY.split(), "--out", str(tmp_path), cache=data_cache)
    finally:
        del os.environ["DL_ROSETTA_PLAN"]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: DL_ROSETTA_PLAN is plan 000000000000, these options are plan ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.json"))
