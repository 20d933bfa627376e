"""Suites on Slurm (harness.slurm, `suite --executor slurm`) against real Slurm daemons
(tests/slurm_cluster.py: two nodes on this machine), and the parsers, scripts and plan handling
on their own.

Through the cluster: a 2-implementation x 2-repeat suite submitted with `--executor slurm
--detach` is running and queued in `--status`; its first job, cancelled with scancel mid-run,
becomes a failed row with the scheduler's reason; `--resume --executor slurm` submits only that
run again and waits, and the store ends with every record once, each naming its job, cluster and
node. An unknown partition is one line, exit 2, nothing submitted. `srun -N 1 -n 2` (two tasks on
one node standing in for two nodes) trains one PyTorch run over gloo with no --node-rank or
endpoint, recorded on rank 0; a suite row with nodes = 2 runs as one job over both nodes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from conftest import REPO, harness
from slurm_cluster import slurm_cluster  # noqa: F401 (the fixture)

from harness import schedule, slurm
from harness.errors import UsageError
from harness.requests import DeviceSetup, RunRequest, Selection

TINY = {"data": "synthetic", "samples": 64, "epochs": 1}


def suite_file(tmp_path, name: str, options: dict, repeats: int, implementations=("python/pytorch",),
               models=("cnn",)):
    lines = [f"repeats = {repeats}", f"models = {json.dumps(list(models))}",
             f"implementations = {json.dumps(list(implementations))}", "[options]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def planned_runs(tmp_path, name: str, options: dict, repeats: int, implementations=("python/pytorch",),
                 models=("cnn",)) -> list[slurm.PlannedRun]:
    """A suite file as `suite --executor slurm` reads it, expanded into its planned runs."""
    path = suite_file(tmp_path, name, options, repeats, implementations, models)
    suite = schedule.load(str(path), check_setup=slurm.check_setup)
    return [slurm.planned(entry, suite.name, repeat) for entry, repeat in suite.schedule()]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ---- parsers, scripts and plans, no daemons ----------------------------------------------------

def test_expand_hostlist_and_task_counts():
    assert slurm.expand_hostlist("node[01-04,07]") == ["node01", "node02", "node03", "node04", "node07"]
    assert slurm.expand_hostlist("gpu[9-11],login1") == ["gpu9", "gpu10", "gpu11", "login1"]
    assert slurm.expand_hostlist("a[1-2]b[3-4]") == ["a1b3", "a1b4", "a2b3", "a2b4"]
    assert slurm.expand_hostlist("vm") == ["vm"]
    assert slurm.expand_counts("2(x3),1") == [2, 2, 2, 1]
    with pytest.raises(ValueError):
        slurm.expand_hostlist("node[a-b]")


def test_slurm_environment_places_tasks_block_by_block():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "1234",
           "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
    place = slurm.slurm_environment(env)
    assert place == (3, 4, "gpu07", ("gpu07", "gpu07", "gpu08", "gpu08"))
    assert slurm.slurm_environment({}) is None  # not under srun
    assert slurm.launch_defaults(4, port=1234, env=env) == {
        "node_rank": 3, "rdzv_endpoint": "gpu07:1234",
        "workers": ["gpu07:1234", "gpu07:1235", "gpu08:1236", "gpu08:1237"]}
    port = slurm.launch_port(env)
    assert 29500 <= port < 30500 and port == slurm.launch_port(dict(env, SLURM_PROCID="0"))  # every task's
    assert port != slurm.launch_port(dict(env, SLURM_JOB_ID="1235"))  # moves with the job (and step, cluster)
    assert slurm.launch_port({**env, "SLURM_STEP_RESV_PORTS": "12000-12003"}) == 12000  # srun --resv-ports
    with pytest.raises(UsageError, match=r"--nodes 2: this srun step has 4 task\(s\)"):
        slurm.launch_defaults(2, env=env)


@pytest.mark.parametrize("label, filled", [
    ("pytorch", {"rdzv_endpoint": "n1:29507"}),  # torchrun assigns its own ranks
    ("jax", {"rdzv_endpoint": "n1:29507", "node_rank": 1}),
    ("keras[jax]", {"rdzv_endpoint": "n1:29507", "node_rank": 1}),
    ("tensorflow", {"node_rank": 1, "workers": ("n1:29507", "n2:29508")}),  # worker r at port + r
])
def test_fill_from_slurm_sets_what_each_multi_node_launch_needs(label, filled):
    from harness.registry import select
    from harness.requests import check_setup

    framework, _, backend = label.rstrip("]").partition("[")
    impls = select("python", framework, backend or None, "cnn")
    env = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "1(x2)",
           "SLURM_STEP_RESV_PORTS": "29507-29508"}
    setup = DeviceSetup(nodes=2)
    with pytest.raises(UsageError, match="--nodes 2 with"):  # without Slurm: the flags are asked for
        check_setup(setup, impls)
    after = slurm.fill_from_slurm(setup, impls, env=env)
    assert {k: getattr(after, k) for k in filled} == filled
    assert {k: getattr(after, k) for k in ("rdzv_endpoint", "node_rank", "workers") if k not in filled} == \
           {k: None for k in ("rdzv_endpoint", "node_rank", "workers") if k not in filled}
    check_setup(after, impls)  # the setup check passes once Slurm filled the flags
    request = RunRequest(Selection("python", framework, backend or None, "cnn"), setup)
    assert schedule.plan_digest(impls[0], replace(request, setup=after)) == schedule.plan_digest(impls[0], request)
    assert slurm.fill_from_slurm(setup, impls, env={}) == setup  # not under srun
    assert slurm.fill_from_slurm(DeviceSetup(nodes=1), impls, env=env) == DeviceSetup(nodes=1)
    given = replace(setup, rdzv_endpoint="h:1", node_rank=0, workers=("h:1", "h:2"))
    assert slurm.fill_from_slurm(given, impls, env=env) == given  # what the user gave wins


def test_scheduler_rows_parse_with_their_states():
    rows = slurm.parse_squeue("12|dlr-s-0123456789ab-r1|TIMEOUT|TimeLimit|vm|2026-01-01T00:00:00|2026-01-01T00:01:00\n"
                              "13|dlr-s-0123456789ab-r2|PENDING|Priority||N/A|N/A\n")
    assert [(j.job_id, j.state, j.reason, j.phase) for j in rows] == [
        ("12", "TIMEOUT", "TimeLimit", "ended"), ("13", "PENDING", "Priority", "queued")]
    acct = slurm.parse_sacct("14|dlr-s-0123456789ab-r0|CANCELLED by 1000|None|n1|x|y\n")
    assert (acct[0].state, acct[0].phase) == ("CANCELLED", "ended")
    assert slurm.parse_job_name("dlr-python-cnn-0123456789ab-r2") == ("python-cnn", "0123456789ab", 2)
    assert slurm.parse_job_name("someone-elses-job") is None
    timeout = slurm.job_error(rows[0], "")
    assert timeout == "Slurm TIMEOUT: job 12 on vm reached its time limit (--time), reason TimeLimit"


def test_batch_script_runs_the_planned_run_with_its_plan(tmp_path):
    run = planned_runs(tmp_path, "tiny", TINY, 2)[1]
    options = slurm.SbatchOptions(partition="gpu", account="proj", time="00:10:00", gres="gpu:8",
                                  extra=("--qos=high",))
    script = slurm.batch_script(run, tmp_path / "store", options, python="/venv/bin/python", repo=REPO)
    name = slurm.job_name(run.plan)
    assert slurm.parse_job_name(name) == ("tiny", run.plan["config"], 1)
    for directive in (f"--job-name={name}", "--exclusive", "--nodes=1", "--partition=gpu", "--account=proj",
                      "--time=00:10:00", "--gres=gpu:8", "--qos=high",
                      f"--output={tmp_path.resolve()}/store/slurm/logs/%j.out"):
        assert f"#SBATCH {directive}\n" in script
    assert ("exec /venv/bin/python -m harness run " + " ".join(run.run_args)
            + f" --out {tmp_path.resolve()}/store --quiet") in script
    # bash reads the plan back as JSON, with the job's id, cluster and partition in front
    export = next(line for line in script.splitlines() if line.startswith("export DL_ROSETTA_PLAN="))
    out = subprocess.run(["bash", "-c", f'{export}; printf %s "$DL_ROSETTA_PLAN"'], capture_output=True, text=True,
                         env=dict(os.environ, SLURM_JOB_ID="4242", SLURM_CLUSTER_NAME="c1",
                                  SLURM_JOB_PARTITION="gpu"), check=True).stdout
    assert json.loads(out) == {**run.plan, "slurm_job": "4242", "slurm_cluster": "c1", "slurm_partition": "gpu"}
    assert schedule.given_plan({"DL_ROSETTA_PLAN": out})["repeat"] == 1


def test_a_multi_node_gpu_row_is_checked_for_the_cluster_and_starts_one_harness_per_node(tmp_path):
    """A suite row with nodes > 1 and no endpoint is not skipped under Slurm (the allocation gives
    the flags; the GPUs are the node's, not this machine's), and its job runs srun."""
    path = suite_file(tmp_path, "gpu", {"device": "cuda", "gpus": 8, "nodes": 2}, 1, ["python/jax"], ["resnet50"])
    here = schedule.load(str(path))
    assert not here.entries and here.skipped  # the local executor cannot run it
    [run] = [slurm.planned(e, "gpu", r) for e, r in schedule.load(str(path), check_setup=slurm.check_setup).schedule()]
    script = slurm.batch_script(run, tmp_path, python="py")
    assert "#SBATCH --exclusive\n#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n" in script
    assert "#SBATCH --gres=gpu:8\n" in script  # the row's GPUs, where --gres was not given
    assert "\nexec srun --kill-on-bad-exit=1 py -m harness run " + " ".join(run.run_args) in script
    assert "--gres" not in slurm.batch_script(run, tmp_path, slurm.SbatchOptions(gres="none"), python="py")
    bad = suite_file(tmp_path, "bad", {"nodes": 2}, 1, ["python/mxnet"])
    assert not schedule.load(str(bad), check_setup=slurm.check_setup, check_runnable=True).entries  # no launch


def test_a_run_answers_the_plan_it_was_submitted_as():
    from harness.registry import select

    impls = select("python", "pytorch", None, "cnn")
    request = RunRequest(Selection("python", "pytorch", None, "cnn"), repeats=3)
    assert [(r, p["repeat"]) for _, r, p in schedule.runs(impls, request, env={})] == [(0, 0), (1, 1), (2, 2)]
    plan = {"suite": "s", "config": schedule.plan_digest(impls[0], request), "repeat": 4, "slurm_job": "9"}
    assert schedule.runs(impls, request, env={"DL_ROSETTA_PLAN": json.dumps(plan)}) == [(impls[0], 4, plan)]
    with pytest.raises(UsageError, match="^DL_ROSETTA_PLAN is plan 000000000000, these options are plan "):
        schedule.runs(impls, request, env={"DL_ROSETTA_PLAN": json.dumps({**plan, "config": "000000000000"})})
    with pytest.raises(UsageError, match="^DL_ROSETTA_PLAN is not a plan"):
        schedule.runs(impls, request, env={"DL_ROSETTA_PLAN": "nonsense"})


def test_done_on_a_cluster_counts_every_node_of_that_cluster(tmp_path):
    """completed(cluster=...) counts the records a cluster's jobs wrote on any node; not this
    machine's own runs of the same plan, and not another cluster's."""
    from fake_records import ENV, record

    from harness import results

    plan = {"suite": "s", "config": "0123456789ab"}
    written = [("n1", 0, {"slurm_job": "1", "slurm_cluster": "c1"}), ("n2", 1, {"slurm_job": "2", "slurm_cluster": "c1"}),
               ("m1", 2, {"slurm_job": "1", "slurm_cluster": "c2"}), ("here", 3, {})]  # (node, repeat, job's facts)
    for node, repeat, job in written:
        results.save(record(plan={**plan, "repeat": repeat, **job}, env={**ENV, "hostname": node,
                                                                          "machine_id": f"id-{node}"}), tmp_path)

    def done(**where):
        return sorted(repeat for _, _, repeat in schedule.completed(tmp_path, commit="0123456789ab", **where))

    assert done(cluster="c1") == [0, 1]  # both nodes of c1
    assert done(cluster="c2") == [2]
    assert done(machine="id-here") == [3] and done(machine="id-n1") == [0]  # the local executor: one machine


def test_a_forgotten_job_becomes_one_failed_record(tmp_path, monkeypatch):
    """A job the controller no longer remembers (no accounting) and that left no record is a
    failed row, written once; resume submits it again."""
    from harness import results

    run = planned_runs(tmp_path, "tiny", TINY, 1)[0]
    store = tmp_path / "store"
    monkeypatch.setattr(slurm, "_slurm", lambda cmd, what, check=True: subprocess.CompletedProcess(
        cmd, 0, "77\n" if cmd[0] == "sbatch" else "", ""))
    slurm.submit(run, store)
    states = slurm.status(store, [run], cluster="c1")
    assert [s.state for s in states] == ["failed"]
    assert states[0].reason.startswith("Slurm UNKNOWN: job 77 is no longer known to the scheduler")
    assert slurm.status(store, [run], cluster="c1")[0].state == "failed"
    index = results.index(store)
    assert len(index) == 1 and index["status"].tolist() == ["failed"]  # written once, read back as a run
    assert slurm.to_submit(states) == [run]


# ---- against the daemons ---------------------------------------------------------------------

def test_hostlist_matches_scontrol(slurm_cluster):  # noqa: F811
    for text in ("node[01-04,07]", "gpu[9-11],login1", "a[1-2]b[3-4]"):
        proc = slurm_cluster.run("scontrol", "show", "hostnames", text)
        assert proc.returncode == 0, proc.stderr
        assert slurm.expand_hostlist(text) == proc.stdout.split()


def two_quick_implementations() -> list[str]:
    from harness import runtimes
    from harness.registry import select

    chosen = []
    for label in ("python/pytorch", "python/mxnet", "python/tensorflow", "python/jax"):  # quickest to start first
        framework = label.split("/")[1]
        if all(runtimes.availability(i) is None for i in select("python", framework, None, "cnn")):
            chosen.append(label)
    return chosen[:2]


def status_rows(suite, store, cache) -> tuple[int, list[dict]]:
    proc = harness("suite", str(suite), "--status", "--out", str(store), "--format", "json", cache=cache)
    assert proc.stdout.strip(), proc.stderr[-2000:]
    return proc.returncode, json.loads(proc.stdout)["runs"]


def test_suite_on_slurm_status_cancel_and_resume(tmp_path, data_cache, slurm_cluster):  # noqa: F811
    from harness import results

    impls = two_quick_implementations()
    if len(impls) < 2:
        pytest.skip(f"needs 2 runnable implementations of cnn; runnable here: {impls}")
    suite = suite_file(tmp_path, "on-slurm", TINY, 2, impls)
    store = tmp_path / "store"
    submit = ("suite", str(suite), "--executor", "slurm", "--partition", slurm_cluster.partition, "--time", "10",
              "--out", str(store))
    proc = harness(*submit, "--status", "--format", "json", cache=data_cache)
    assert proc.returncode == 0 and [r["state"] for r in json.loads(proc.stdout)["runs"]] == ["todo"] * 4
    proc = harness(*submit, "--detach", cache=data_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "submitted 4 job(s) to Slurm" in proc.stderr and "--status" in proc.stderr
    jobs = slurm.submitted_jobs(store, "on-slurm")
    assert len({j["slurm_job"] for j in jobs}) == 4  # one job per planned run: repeats go to different jobs
    runs = planned_runs(tmp_path, "on-slurm", TINY, 2, impls)
    assert [slurm.plan_key(j["plan"]) for j in jobs] == [r.key for r in runs]

    # the exclusive node runs one job at a time: the first runs while the others wait
    # one job per exclusive node: the first two run while the others wait
    first, log = jobs[0]["slurm_job"], slurm.log_path(store, jobs[0]["slurm_job"])
    wait_for(lambda: slurm.jobs([first])[first].state == "RUNNING", 60, "the first job to run")
    code, rows = status_rows(suite, store, data_cache)
    assert code == 0 and rows[0]["state"] == "running" and rows[0]["job"] == first
    assert rows[0]["node"] in slurm_cluster.nodes
    assert [r["state"] for r in rows[2:]] == ["queued", "queued"]

    # cancelled mid-run (its worker has started): a failed row with the scheduler's reason
    wait_for(lambda: list((store / "logs").glob("*.log")), 60, "the first job's worker to start")
    slurm.cancel([first])
    cluster = slurm.cluster_name()
    wait_for(lambda: slurm.status(store, runs, cluster)[0].state == "failed", 60, "the cancelled job to end")
    code, rows = status_rows(suite, store, data_cache)
    assert code == 1 and rows[0]["state"] == "failed" and rows[0]["slurm_state"] == "CANCELLED"
    node = rows[0]["node"]
    assert node in slurm_cluster.nodes
    assert rows[0]["reason"].startswith(f"Slurm CANCELLED: job {first} on {node} cancelled (scancel")
    # scancel's SIGTERM reached the harness mid-run: its own record says so (issue 19), once
    [ended] = [r for r in results.read_records([store]) if r["status"] != "ok"]
    assert ended["status"] == "interrupted" and "interrupted by SIGTERM" in rows[0]["reason"]
    assert ended["plan"]["slurm_job"] == first and slurm.plan_key(ended["plan"]) == runs[0].key
    assert "[slurm] job" in log.read_text()

    # --resume submits the cancelled run only (the others are done, queued or running) and waits
    proc = harness(*submit, "--resume", "--poll", "1", "--format", "json", cache=data_cache, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["runs"] == 4 and summary["resumed"] == 3 and len(summary["submitted"]) == 1
    assert summary["failed"] == [] and len(summary["summary"]) == 2  # one row per implementation

    records = results.read_records([store])
    ok = [r for r in records if r["status"] == "ok"]
    assert sorted(slurm.plan_key(r["plan"]) for r in ok) == sorted(r.key for r in runs)  # every record once
    assert len(records) == 5  # and the cancelled run's failed record, written once
    for r in ok:
        assert r["plan"]["slurm_cluster"] == cluster and r["plan"]["slurm_partition"] == slurm_cluster.partition
        assert r["environment"]["hostname"] == slurm_cluster.host  # the record names the node (its host)
    assert {r["plan"]["slurm_job"] for r in ok} == {j["slurm_job"] for j in jobs[1:]} | set(summary["submitted"])
    code, rows = status_rows(suite, store, data_cache)
    assert code == 0 and [r["state"] for r in rows] == ["done"] * 4


def test_unknown_partition_is_one_line_and_submits_nothing(tmp_path, data_cache, slurm_cluster):  # noqa: F811
    suite = suite_file(tmp_path, "tiny", TINY, 1)
    proc = harness("suite", str(suite), "--executor", "slurm", "--partition", "nope", "--out", str(tmp_path / "store"),
                   cache=data_cache)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --partition nope: Slurm refused it (")
    assert proc.stderr.rstrip("\n").endswith(f"choices: {slurm_cluster.partition}")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists()


PROBE = "import json; from harness.slurm import slurm_environment; print(json.dumps(slurm_environment()))"


def test_srun_tasks_read_rank_count_and_endpoint(slurm_cluster):  # noqa: F811
    proc = slurm_cluster.run("srun", "-N", "1", "-n", "2", "--chdir", str(REPO), sys.executable, "-c", PROBE,
                             timeout=120)
    assert proc.returncode == 0, proc.stderr
    places = sorted(json.loads(line) for line in proc.stdout.splitlines())
    node = places[0][2]
    assert node in slurm_cluster.nodes
    assert places == [[0, 2, node, [node, node]], [1, 2, node, [node, node]]]


def test_srun_two_tasks_train_one_pytorch_run_without_rank_or_endpoint(tmp_path, data_cache, slurm_cluster):  # noqa: F811
    """The issue's `srun -N 2 python -m harness --framework pytorch ... --nodes 2`, two tasks on the
    one node standing in for two nodes (CPU, gloo): torchrun's rendezvous at the first host of the
    allocation, one record, written by the node whose torchrun got rank 0."""
    store = tmp_path / "store"
    tiny = ["--data", "synthetic", "--samples", "256", "--epochs", "1"]  # two replicas of batch 64: two steps
    proc = slurm_cluster.run(
        "srun", "-N", "1", "-n", "2", "--kill-on-bad-exit=1", "--chdir", str(REPO), sys.executable, "-m", "harness",
        "--framework", "pytorch", "--model", "cnn", *tiny, "--nodes", "2", "--data-dir", str(data_cache),
        "--out", str(store), "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stderr.count("[slurm] --nodes 2: --rdzv-endpoint ") == 2  # each task took it from Slurm
    assert "trained as a replica of a 2-node run; its record is written on node 0" in proc.stderr
    records = [json.loads(p.read_text()) for p in store.glob("*.json")]
    assert len(records) == 1 and records[0]["status"] == "ok"
    assert records[0]["config"]["extra"]["rdzv_endpoint"].split(":")[0] in slurm_cluster.nodes
    assert records[0]["info"]["setup"]["replicas"] == 2 and records[0]["info"]["setup"]["nodes"] == 2


def test_a_two_node_suite_row_runs_as_one_job_over_both_nodes(tmp_path, data_cache, slurm_cluster):  # noqa: F811
    """A row with nodes = 2 is one sbatch job on both nodes; srun starts one harness per node, each
    takes from Slurm what TensorFlow's MultiWorkerMirroredStrategy needs (its rank, every node's
    worker address), and node 0 writes the one record of the planned run."""
    pytest.importorskip("tensorflow")
    if len(slurm_cluster.nodes) < 2:
        pytest.skip(f"the test cluster has one node (this machine is named {slurm_cluster.host})")
    suite = suite_file(tmp_path, "two-nodes", {"data": "synthetic", "samples": 256, "epochs": 1, "nodes": 2}, 1,
                       ["python/tensorflow"])
    store = tmp_path / "store"
    proc = harness("suite", str(suite), "--executor", "slurm", "--time", "10", "--poll", "1", "--out", str(store),
                   "--format", "json", cache=data_cache, timeout=600)
    [job] = slurm.submitted_jobs(store)
    log = slurm.log_path(store, job["slurm_job"]).read_text()
    assert proc.returncode == 0, proc.stderr[-2000:] + log[-3000:]
    assert json.loads(proc.stdout)["failed"] == []
    [record] = results_of(store)
    assert record["status"] == "ok" and record["plan"]["slurm_job"] == job["slurm_job"]
    assert record["info"]["setup"]["replicas"] == 2 and record["info"]["setup"]["nodes"] == 2
    extra = record["config"]["extra"]
    assert extra["node_rank"] == 0 and len(extra["workers"]) == 2
    assert sorted(w.split(":")[0] for w in extra["workers"]) == sorted(slurm_cluster.nodes)  # one per node
    assert "[slurm] --nodes 2: --node-rank 1 --workers " in log  # the other node's harness
    assert "trained as a replica of a 2-node run" in log


def results_of(store) -> list[dict]:
    from harness import results

    return results.read_records([store])


def test_run_refuses_a_plan_its_options_do_not_match(tmp_path, data_cache):
    """A batch job whose run arguments no longer give its plan's digest is one line, exit 2."""
    plan = {"suite": "s", "config": "000000000000", "repeat": 1}
    os.environ["DL_ROSETTA_PLAN"] = json.dumps({"slurm_job": "9", **plan})
    try:
        tiny = [a for k, v in TINY.items() for a in (f"--{k}", str(v))]
        proc = harness("run", "--framework", "pytorch", *tiny, "--out", str(tmp_path), cache=data_cache)
    finally:
        del os.environ["DL_ROSETTA_PLAN"]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: DL_ROSETTA_PLAN is plan 000000000000, these options are plan ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.json"))
