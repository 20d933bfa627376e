"""Slurm: one batch job per planned run, the results store as the only rendezvous.

The harness brings no scheduler of its own. Each planned run of a suite (implementation x model x
setup x repeat, harness.schedule) becomes one `sbatch` job on an exclusive node that runs

    python -m harness run <the run's own arguments> --out STORE --quiet

(under `srun`, one task per node, for a row with nodes > 1) with DL_ROSETTA_PLAN (the plan, plus
the job's id, cluster and partition) in its environment, so the record it writes into STORE names
its suite, plan digest, repeat and Slurm job (`record["plan"]["slurm_job"]`). The store must be on
a filesystem every node shares, and so must the checkout, its environments and the data cache
(DL_ROSETTA_DATA; sbatch passes the submitting environment on).

Why sbatch and not submitit: submitit pickles a Python callable and reads job states from `sacct`
only. Against a real slurmctld without slurmdbd (Debian's packages, tests/slurm_cluster.py) its
states stay UNKNOWN ("Bypassing sacct error ... accounting storage is disabled"), a cancelled job's
`result()` waits forever, and it never gives the scheduler's reason. Our unit of work is already a
command line, so a batch script says everything, and its states come from `squeue --states=all`
(which remembers ended jobs for MinJobAge, default 300 s) with `sacct` (where accounting exists)
for jobs the controller has forgotten.

What lives in the store, beside the records (`read_records` skips these files):

    STORE/slurm/scripts/<job name>.<stamp>.sh   the batch script as submitted
    STORE/slurm/jobs/<job id>.json              what was submitted: job id, name, plan, label, options
    STORE/slurm/logs/<job id>.out               the job's stdout and stderr

A job the scheduler ends (time limit, node failure, preemption, scancel, out of memory) leaves no
record of its own; `status` writes one for it: status "failed", error naming the scheduler's state
and reason, the job's log tail, and the plan with its job id. So the store never has a hole, and
`to_submit` (what `--resume` sends again) lists every planned run that has no "ok" record and no
job queued or running. Done means an "ok" record of the plan written by a job of this cluster, on
any of its nodes, at this checkout's commit (harness.schedule.completed with the cluster).

Multi-node runs under srun: `slurm_environment()` gives (node rank, node count, endpoint host) from
SLURM_PROCID, SLURM_NTASKS (one task per node) and the first host of the step's node list;
`launch_defaults` turns them into the run command's --node-rank/--rdzv-endpoint/--workers, and
`fill_from_slurm(setup, impls)` returns the DeviceSetup with those the selected engines' launch
needs (registry MultiNode.needs) and the user did not give. They are not part of the plan digest
(RunRequest.planned), so a filled-in run answers the plan it was submitted as.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from harness.errors import UsageError
from harness.requests import DeviceSetup, RunRequest
from harness.schedule import PLAN_ENV, plan_id

REPO = Path(__file__).resolve().parents[1]
JOB_PREFIX = "dlr"
DEFAULT_PORT = 29500  # rendezvous/coordinator port on the endpoint host (torchrun's default)
PORT_SPREAD = 1000  # the port moves with the step (29500 .. 30499): steps sharing a host do not collide
# a job that ran to its end (COMPLETED, FAILED) gets this long for its record to show up on a shared
# filesystem (NFS caches directory listings) before it counts as ended without one
RECORD_GRACE_S = 90
FIELDS = ("job_id", "name", "state", "reason", "nodes", "start", "end")
SQUEUE_FORMAT = "%i|%j|%T|%r|%N|%S|%e"  # the FIELDS, '|' apart (our job names hold no '|')
SACCT_FIELDS = "JobID,JobName,State,Reason,NodeList,Start,End"

# Slurm's job states (squeue %T, sacct State) as the harness sees them
QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
# ended without the harness finishing its run: the scheduler's word, and what it means
ENDED_BY_SCHEDULER = {
    "CANCELLED": "cancelled (scancel, or an administrator)",
    "TIMEOUT": "reached its time limit (--time)",
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "preempted by a job of higher priority",
    "OUT_OF_MEMORY": "ran out of memory",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "reached its deadline",
    "REVOKED": "revoked (federation)",
}
ENDED = {"COMPLETED", "FAILED", *ENDED_BY_SCHEDULER}


# ---- the allocation, from inside a job: ranks and hosts for the multi-node launch ----------------

def expand_hostlist(text: str) -> list[str]:
    """Slurm's compact host list -> host names: "node[01-03,07],login1" -> node01 node02 node03
    node07 login1 (zero padding kept, several bracket groups per name multiply out)."""
    names, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            if text[start:i].strip():
                names.append(text[start:i].strip())
            start = i + 1
    out = []
    for name in names:
        hosts = [""]
        for literal, ranges in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", name):
            values = [literal]
            if ranges:
                values = []
                for part in ranges.split(","):
                    lo, _, hi = part.partition("-")
                    if not lo.isdigit() or (hi and not hi.isdigit()):
                        raise ValueError(f"not a Slurm host list: {text!r}")
                    values += [literal + str(n).zfill(len(lo)) for n in range(int(lo), int(hi or lo) + 1)]
            hosts = [h + v for h in hosts for v in values]
        out += hosts
    return out


def expand_counts(text: str) -> list[int]:
    """SLURM_TASKS_PER_NODE's compact form -> one count per node: "2(x3),1" -> [2, 2, 2, 1]."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise ValueError(f"not a Slurm task count list: {text!r}")
        out += [int(m[1])] * int(m[2] or 1)
    return out


class SlurmPlace(NamedTuple):
    rank: int  # this task's place, SLURM_PROCID: the harness's --node-rank
    count: int  # tasks in the step, SLURM_NTASKS (one per node): the harness's --nodes
    host: str  # the host of task 0, where torchrun's rendezvous / JAX's coordinator listens
    hosts: tuple  # the host of every task, in rank order (TensorFlow's --workers)


def slurm_environment(env=None) -> SlurmPlace | None:
    """(node rank, node count, endpoint host) of this process when srun started it; None outside
    a Slurm step. The step's node list (SLURM_STEP_NODELIST, else SLURM_JOB_NODELIST) and
    SLURM_STEP_TASKS_PER_NODE place the tasks block by block, Slurm's default distribution."""
    env = os.environ if env is None else env
    if "SLURM_PROCID" not in env:
        return None
    count = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or env.get("SLURM_NNODES") or 1)
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    nodes = expand_hostlist(nodelist) if nodelist else [env.get("SLURMD_NODENAME", "localhost")]
    per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    counts = expand_counts(per_node) if per_node else [1] * len(nodes)
    hosts = [h for h, n in zip(nodes, counts) for _ in range(n)][:count]
    return SlurmPlace(int(env["SLURM_PROCID"]), count, hosts[0], tuple(hosts))


def launch_port(env=None) -> int:
    """The endpoint's port: the first port Slurm reserved for the step (srun --resv-ports, where
    MpiParams=ports= is set), else 29500 plus a number from 0 to 999 drawn from the cluster, job
    and step (the same on every node of the step), so that steps sharing a host (a shared node,
    two test clusters on one machine) do not meet at one port."""
    env = os.environ if env is None else env
    reserved = re.match(r"\d+", env.get("SLURM_STEP_RESV_PORTS", ""))
    if reserved:
        return int(reserved[0])
    step = "/".join(env.get(k, "") for k in ("SLURM_CLUSTER_NAME", "SLURM_JOB_ID", "SLURM_STEP_ID"))
    return DEFAULT_PORT + zlib.crc32(step.encode()) % PORT_SPREAD


def launch_defaults(nodes: int, port: int | None = None, env=None) -> dict:
    """What `python -m harness run --nodes K` under srun takes from Slurm instead of flags:
    {"node_rank", "rdzv_endpoint", "workers"}; {} outside srun. Raises UsageError when the step
    has another number of tasks than --nodes (one task per node is the launch's contract)."""
    place = slurm_environment(env)
    if place is None:
        return {}
    port = launch_port(env) if port is None else port
    if place.count != nodes:
        raise UsageError(f"--nodes {nodes}: this srun step has {place.count} task(s); start one task per node "
                         f"(srun -N {nodes} --ntasks-per-node=1) or pass --nodes {place.count}")
    # TensorFlow: one worker per task, task r listening on port + r (tasks may share a host)
    return {"node_rank": place.rank, "rdzv_endpoint": f"{place.host}:{port}",
            "workers": [f"{h}:{port + r}" for r, h in enumerate(place.hosts)]}


def fill_from_slurm(setup: DeviceSetup, impls, port: int | None = None, env=None) -> DeviceSetup:
    """For `run --nodes K` started by srun: the setup with the launch flags the selected
    implementations' multi-node launch needs (registry MultiNode.needs) and the user left out,
    taken from Slurm's environment. The same setup outside srun, with --nodes 1, or when nothing
    is missing. Call it before the setup check (harness.requests.check_setup)."""
    if setup.nodes <= 1:
        return setup
    needed = {flag for impl in impls if impl.multi_node for flag in impl.multi_node.needs}
    missing = {flag for flag in needed if getattr(setup, flag) is None}
    if not missing:
        return setup
    found = launch_defaults(setup.nodes, port, env)
    filled = {k: tuple(v) if k == "workers" else v for k, v in found.items() if k in missing}
    return replace(setup, **filled) if filled else setup


def describe_filled(before: DeviceSetup, after: DeviceSetup) -> str:
    """One line: the launch flags fill_from_slurm added, as the run command's own flags."""
    given = before.launch_extra()
    added = {k: v for k, v in after.launch_extra().items() if k not in given}
    flags = " ".join(f"--{k.replace('_', '-')} {','.join(v) if isinstance(v, list) else v}" for k, v in added.items())
    return f"--nodes {after.nodes}: {flags} (from Slurm's environment)"


# the allocation a suite row will get, for checking its setup on the submitting machine
def _planned_allocation(nodes: int) -> dict:
    return {"SLURM_PROCID": "0", "SLURM_NTASKS": str(nodes), "SLURM_JOB_NODELIST": f"node[0-{nodes - 1}]",
            "SLURM_TASKS_PER_NODE": f"1(x{nodes})"}


def check_setup(setup: DeviceSetup, impls) -> None:
    """A suite row's setup as a Slurm node will run it (harness.schedule.load's check for the
    Slurm executor): the launch flags come from the allocation, and the GPUs are the node's, which
    the submitting machine cannot see. A setup no node could run is a UsageError."""
    from harness.requests import check_setup as check

    check(fill_from_slurm(setup, impls, env=_planned_allocation(setup.nodes)), impls, here=False)


# ---- what to submit --------------------------------------------------------------------------

@dataclass(frozen=True)
class SbatchOptions:
    """The sbatch options the suite passes on; None leaves the cluster's default."""
    partition: str | None = None
    account: str | None = None
    time: str | None = None  # Slurm's forms: MINUTES, HH:MM:SS, D-HH:MM ...
    gres: str | None = None  # e.g. gpu:8; None: gpu:<gpus> for --device cuda rows; "none": no --gres
    extra: tuple = ()  # further sbatch options, verbatim, e.g. ("--qos=high", "--constraint=h100")

    def argv(self) -> list[str]:
        out = [f"--{k}={v}" for k, v in (("partition", self.partition), ("account", self.account),
                                           ("time", self.time)) if v]
        return out + list(self.extra)


@dataclass
class PlannedRun:
    """One planned run: its plan (harness.schedule.run_plan: suite, config digest, repeat,
    run_args), the implementation, and its request as the run command's parser reads run_args."""
    plan: dict
    impl: object  # harness.registry.Implementation
    request: RunRequest
    run_args: list = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return plan_key(self.plan)

    @property
    def label(self) -> str:
        return self.impl.label


def planned(entry, suite: str, repeat: int) -> PlannedRun:
    """A harness.schedule.Entry and one of its repeats as a PlannedRun."""
    return PlannedRun(entry.plan(suite, repeat), entry.impl, entry.request, list(entry.run_args))


plan_key = plan_id  # (suite, config digest, repeat)


def job_name(plan: dict) -> str:
    """dlr-<suite>-<plan digest>-r<repeat>: the planned run a job is for, readable in squeue."""
    return f"{JOB_PREFIX}-{plan.get('suite') or ''}-{plan['config']}-r{plan['repeat']}"


NAME = re.compile(rf"^{JOB_PREFIX}-(?P<suite>.*)-(?P<config>[0-9a-f]{{12}})-r(?P<repeat>\d+)$")


def parse_job_name(name: str) -> tuple | None:
    m = NAME.match(name or "")
    return (m["suite"] or None, m["config"], int(m["repeat"])) if m else None


def _gres(run: PlannedRun, options: SbatchOptions) -> str | None:
    if options.gres == "none":
        return None
    if options.gres:
        return options.gres
    setup = run.request.setup
    return f"gpu:{setup.gpus}" if setup.device == "cuda" else None


def resources(run: PlannedRun, options: SbatchOptions) -> list[str]:
    """The sbatch options that decide where a run may go: an exclusive node (timing shares no
    machine), one task per node, the suite's --partition/--account/--time/--sbatch, the GPUs."""
    gres = _gres(run, options)
    return ["--exclusive", f"--nodes={run.request.setup.nodes}", "--ntasks-per-node=1", *options.argv(),
            *([f"--gres={gres}"] if gres else [])]


# what the job adds to its plan: which job, on which cluster and partition, answered it
JOB_FACTS = (("slurm_job", "SLURM_JOB_ID"), ("slurm_cluster", "SLURM_CLUSTER_NAME"),
             ("slurm_partition", "SLURM_JOB_PARTITION"))


def batch_script(run: PlannedRun, store, options: SbatchOptions = SbatchOptions(),
                 python: str = sys.executable, repo: Path = REPO) -> str:
    """The sbatch script of one planned run (absolute paths: it runs on another machine)."""
    store = Path(store).resolve()
    directives = [f"--job-name={job_name(run.plan)}", f"--output={store}/slurm/logs/%j.out", f"--chdir={repo}",
                  *resources(run, options)]
    command = [str(python), "-m", "harness", "run", *run.run_args, "--out", str(store), "--quiet"]
    if run.request.setup.nodes > 1:  # one harness per node; each takes its rank and node 0's address from Slurm
        command = ["srun", "--kill-on-bad-exit=1", *command]
    plan = json.dumps(run.plan, sort_keys=True)
    facts = "".join(f'\\"{key}\\": \\"${{{var}}}\\", ' for key, var in JOB_FACTS)
    lines = ["#!/bin/bash", *[f"#SBATCH {d}" for d in directives],
             f"# {run.label}, suite {run.plan.get('suite')}, plan {run.plan['config']}, repeat {run.plan['repeat']}",
             # the plan as JSON with this job's facts in front (bash joins the double- and single-quoted halves)
             f'export {PLAN_ENV}="{{{facts}"{shlex.quote(plan[1:])}',
             'echo "[slurm] job $SLURM_JOB_ID on $(hostname): $(date -u +%FT%TZ)"',
             "exec " + shlex.join(command), ""]
    return "\n".join(lines)


# ---- talking to the scheduler ----------------------------------------------------------------

def _slurm(cmd: list[str], what: str, check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise UsageError(f"--executor slurm: {cmd[0]} is not on PATH (no Slurm client here); "
                         "run on a Slurm login node, or choose --executor local")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise UsageError(f"{what}: {_last_error(proc.stderr) or f'{cmd[0]} exit code {proc.returncode}'}")
    return proc


def _last_error(stderr: str) -> str:
    """sbatch/squeue say why on their last 'error:' line (or the last line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.split("error:", 1)[1].strip() for line in lines if "error:" in line]
    return errors[-1] if errors else (lines[-1] if lines else "")


def partitions() -> list[str]:
    proc = _slurm(["sinfo", "--noheader", "--format=%R"], "sinfo", check=False)
    return sorted(set(proc.stdout.split())) if proc.returncode == 0 else []


def cluster_name() -> str:
    """The cluster the Slurm clients here talk to (its jobs' SLURM_CLUSTER_NAME)."""
    proc = _slurm(["scontrol", "show", "config"], "scontrol show config", check=False)
    if proc.returncode != 0:
        raise UsageError(f"--executor slurm: no Slurm controller answers here (scontrol: "
                         f"{_last_error(proc.stderr) or f'exit code {proc.returncode}'}); run on a Slurm login node "
                         "(or set SLURM_CONF), or choose --executor local")
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ClusterName":
            return value.strip()
    raise UsageError("scontrol show config names no ClusterName")


def check_options(options: SbatchOptions, directives: list[str] | None = None) -> None:
    """Ask slurmctld whether a job with these options could run (`sbatch --test-only`), before
    anything is submitted: a bad partition, account, time, gres or node count is one line."""
    directives = directives or ["--exclusive", *options.argv()]
    proc = _slurm(["sbatch", "--test-only", *directives, "--wrap", "true"], "sbatch --test-only", check=False)
    if proc.returncode == 0:
        return
    why = _last_error(proc.stderr)
    if options.partition and "partition" in why.lower():
        raise UsageError(f"--partition {options.partition}: Slurm refused it ({why}); "
                         f"choices: {', '.join(partitions()) or 'see sinfo'}")
    raise UsageError(f"sbatch {' '.join(directives)}: Slurm refused it ({why})")


@dataclass
class Submitted:
    job_id: str
    name: str
    script: Path


def submit(run: PlannedRun, store, options: SbatchOptions = SbatchOptions(), python: str = sys.executable,
           repo: Path = REPO) -> Submitted:
    """sbatch one planned run; the script and what was submitted are kept in STORE/slurm/."""
    from harness.results import write_new

    store = Path(store).resolve()
    for sub in ("scripts", "jobs", "logs"):  # the log folder must exist before the job starts
        (store / "slurm" / sub).mkdir(parents=True, exist_ok=True)
    name = job_name(run.plan)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    script = store / "slurm" / "scripts" / f"{name}.{stamp}.sh"
    script.write_text(batch_script(run, store, options, python, repo))
    proc = _slurm(["sbatch", "--parsable", str(script)], f"sbatch {run.label}")
    job_id = proc.stdout.strip().split(";")[0]  # "ID" or "ID;cluster"
    if not job_id.isdigit():
        raise UsageError(f"sbatch {run.label}: no job id in its answer {proc.stdout.strip()!r}")
    write_new(store / "slurm" / "jobs" / f"{job_id}.json", json.dumps(
        {"slurm_job": job_id, "name": name, "plan": run.plan, "label": run.label, "script": str(script),
         "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds"), "options": asdict(options)},
        indent=1))
    return Submitted(job_id, name, script)


def check_all(runs: list[PlannedRun], options: SbatchOptions = SbatchOptions()) -> None:
    """`sbatch --test-only` once for every distinct set of resources the runs ask for."""
    for directives in dict.fromkeys(tuple(resources(run, options)) for run in runs):
        check_options(options, list(directives))


def submit_all(runs: list[PlannedRun], store, options: SbatchOptions = SbatchOptions(),
               python: str = sys.executable, repo: Path = REPO, checked: bool = False) -> list[Submitted]:
    """One job per planned run, in order, after check_all (unless `checked`): nothing is
    submitted when Slurm would refuse any of them."""
    if not checked:
        check_all(runs, options)
    return [submit(run, store, options, python, repo) for run in runs]


@dataclass
class Job:
    """What the scheduler says about one job (UNKNOWN: it no longer remembers the job)."""
    job_id: str
    name: str = ""
    state: str = "UNKNOWN"
    reason: str = ""
    nodes: str = ""
    start: str = ""
    end: str = ""

    @property
    def phase(self) -> str:
        """queued, running or ended (UNKNOWN counts as ended: no job can still run unseen)."""
        return "queued" if self.state in QUEUED else "running" if self.state in RUNNING else "ended"


def _parse_rows(text: str, sep: str = "|") -> list[Job]:
    jobs = []
    for line in text.splitlines():
        cells = line.strip().split(sep)
        if len(cells) < len(FIELDS) or not cells[0]:
            continue
        job = Job(*[c.strip() for c in cells[:len(FIELDS)]])
        job.state = job.state.split()[0] if job.state else "UNKNOWN"  # sacct: "CANCELLED by 1000"
        job.state = job.state.rstrip("+")
        jobs.append(job)
    return jobs


def parse_squeue(text: str) -> list[Job]:
    """`squeue --noheader --format=SQUEUE_FORMAT` lines -> Jobs."""
    return _parse_rows(text)


def parse_sacct(text: str) -> list[Job]:
    """`sacct --noheader --parsable2 --allocations --format=SACCT_FIELDS` lines -> Jobs."""
    return _parse_rows(text)


def jobs(job_ids=None) -> dict[str, Job]:
    """{job id: Job} for the given jobs (default: every job of this user the controller remembers).
    squeue --states=all knows pending, running and recently ended jobs (MinJobAge); sacct, where
    the cluster keeps accounting, the older ones; the rest are UNKNOWN."""
    query = ["squeue", "--states=all", "--noheader", f"--format={SQUEUE_FORMAT}"]
    if job_ids is None:
        return {j.job_id: j for j in parse_squeue(_slurm([*query, "--me"], "squeue").stdout)}
    wanted = [str(j) for j in job_ids]
    if not wanted:
        return {}
    # by id, not --me: whoever shares the store sees every job of it
    proc = _slurm([*query, f"--jobs={','.join(wanted)}"], "squeue", check=False)
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:  # all of them forgotten: not an error
        raise UsageError(f"squeue: {_last_error(proc.stderr) or f'exit code {proc.returncode}'}")
    found = {j.job_id: j for j in parse_squeue(proc.stdout)}
    missing = [j for j in wanted if j not in found]
    if missing:
        acct = _slurm(["sacct", "--noheader", "--parsable2", "--allocations", f"--format={SACCT_FIELDS}",
                       "--jobs", ",".join(missing)], "sacct", check=False)
        if acct.returncode == 0:  # "Slurm accounting storage is disabled" where there is no slurmdbd
            found.update({j.job_id: j for j in parse_sacct(acct.stdout) if j.job_id in missing})
    return {j: found.get(j, Job(j)) for j in wanted}


def suite_jobs(suite: str) -> list[Job]:
    """The jobs of one suite the controller remembers (by job name), pending to ended."""
    return [j for j in jobs().values() if (parse_job_name(j.name) or (None,))[0] == suite]


def cancel(job_ids) -> None:
    ids = [str(j) for j in job_ids]
    if ids:
        _slurm(["scancel", *ids], "scancel")


# ---- the store and the scheduler together ----------------------------------------------------

@dataclass
class RunState:
    """Where one planned run stands: todo (never submitted), queued, running, done or failed."""
    run: PlannedRun
    state: str
    job: Job | None = None  # its latest job
    record: dict | None = None  # the ok record (done) or the failed record (failed)

    @property
    def reason(self) -> str:
        if self.state == "failed" and self.record:
            error = self.record.get("error") or ""
            if self.record.get("status") == "interrupted" and self.job and self.job.phase == "ended":
                # the harness recorded the signal it got; the scheduler says who sent it
                return f"{job_error(self.job, '')}; the run: {error}"
            return error
        if self.state == "queued" and self.job:
            return self.job.reason  # Priority, Resources, ...
        return ""


def submitted_jobs(store, suite: str | None = None) -> list[dict]:
    """What was submitted into this store (STORE/slurm/jobs/*.json), oldest job first; only one
    suite's when `suite` is given."""
    folder = Path(store) / "slurm" / "jobs"
    out = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
    if suite is not None:
        out = [s for s in out if s["plan"].get("suite") == suite]
    return sorted(out, key=lambda s: int(s["slurm_job"]))


def log_path(store, job_id: str) -> Path:
    return Path(store).resolve() / "slurm" / "logs" / f"{job_id}.out"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def job_error(job: Job, tail: str) -> str:
    """One line: what ended the job, in the scheduler's words first."""
    where = f" on {job.nodes}" if job.nodes and job.nodes != "(null)" else ""
    if job.state in ENDED_BY_SCHEDULER:
        if not where:  # it never ran; its reason is the stale one from the queue (Priority, Resources)
            return f"Slurm {job.state}: job {job.job_id} {ENDED_BY_SCHEDULER[job.state]} while queued"
        reason = f", reason {job.reason}" if job.reason and job.reason != "None" else ""
        return f"Slurm {job.state}: job {job.job_id}{where} {ENDED_BY_SCHEDULER[job.state]}{reason}"
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
    if job.state == "UNKNOWN":
        return (f"Slurm UNKNOWN: job {job.job_id} is no longer known to the scheduler (no accounting, or "
                f"past MinJobAge) and left no record" + (f"; its log ends: {last}" if last else ""))
    if job.state == "COMPLETED":
        return (f"Slurm COMPLETED: job {job.job_id}{where} exited 0 but no record reached the store "
                "(is --out on a filesystem every node shares?)")
    return f"Slurm {job.state}: job {job.job_id}{where} ended without a record" + (f": {last}" if last else "")


def failed_record(run: PlannedRun, job: Job, store, cluster: str | None = None) -> dict:
    """The record of a run the scheduler ended before the harness could write one: the planned
    configuration (as harness.benchmark.execute writes it), status failed, the scheduler's reason."""
    from harness import environment
    from harness.benchmark import new_run_id

    impl, request = run.impl, run.request
    options = request.options(impl)
    epochs, batch_size, data = request.resolved(impl.model)
    if options.scaling == "weak":
        batch_size *= options.gpus * options.nodes
    tail = _tail(log_path(store, job.job_id))
    node = job.nodes if job.nodes and job.nodes != "(null)" else None
    return {
        "run_id": new_run_id(impl, run.plan["repeat"]),
        "started": None,
        "status": "failed",
        "error": job_error(job, tail),
        "impl": {"lang": impl.lang, "framework": impl.name, "backend": impl.backend, "model": impl.model,
                 "label": impl.label, "version": None},
        "config": {"data": data, "n_train": request.samples, "n_test": None, "epochs": epochs,
                   "batch_size": batch_size, "repeat": run.plan["repeat"], "timeout_s": request.timeout,
                   **options.to_dict()},
        "timing": {}, "epochs": [], "metrics": {}, "memory": {}, "info": {}, "versions": {},
        # the node it ran on (if any) and the checkout it would have measured
        "environment": {"hostname": node, "machine_id": None, "git": environment.git_commit()},
        "slurm": asdict(job),
        "log_tail": tail,
        "command": None,
        "plan": {**run.plan, "slurm_job": job.job_id, "slurm_cluster": cluster},
    }


def _recently_ended(job: Job, now: datetime | None = None) -> bool:
    """A job that ran to its end (COMPLETED, FAILED) less than RECORD_GRACE_S ago: its record
    may not be visible yet on a shared filesystem."""
    if job.state not in ("COMPLETED", "FAILED"):
        return False
    try:
        end = datetime.fromisoformat(job.end)  # squeue/sacct: local time, no zone
    except ValueError:
        return False
    return ((now or datetime.now()) - end).total_seconds() < RECORD_GRACE_S


def status(store, runs: list[PlannedRun], cluster: str | None = None, write_failed: bool = True,
           commit: str | None = None) -> list[RunState]:
    """Where every planned run stands, from the store and the scheduler: queued or running (its
    latest job is), done (an "ok" record of the plan: written by a job of `cluster` on any node,
    or by this machine when cluster is None; at this checkout's commit unless `commit` says),
    failed (its latest job ended without an ok record; a failed record otherwise), or todo.
    A job that ended without a record of its own gets a failed record written now, naming the
    scheduler's reason (write_failed), so nothing is a hole. The scheduler is asked only about
    jobs submitted into this store."""
    from harness import results, schedule

    store = Path(store)
    ok = schedule.completed(store, commit=commit, cluster=cluster)
    records = results.read_records([store]) if store.exists() else []
    by_job, failed = {}, {}
    for r in records:
        plan = r.get("plan") or {}
        if plan.get("slurm_job"):
            by_job[str(plan["slurm_job"])] = r
        if r["status"] == "failed":
            failed[plan_key(plan)] = r
    wanted = {run.key for run in runs}
    latest = {}
    for s in submitted_jobs(store):  # oldest first: the latest job of every plan wins
        if plan_key(s["plan"]) in wanted:
            latest[plan_key(s["plan"])] = s
    known = jobs([s["slurm_job"] for s in latest.values()]) if latest else {}
    out = []
    for run in runs:
        sub = latest.get(run.key)
        job = known[sub["slurm_job"]] if sub else None
        if job is not None and job.phase == "ended" and job.job_id not in by_job and _recently_ended(job):
            job = replace(job, state="COMPLETING", reason="its record is on its way to the store")
        if job is not None and job.phase != "ended":
            out.append(RunState(run, job.phase, job=job))
        elif run.key in ok:
            out.append(RunState(run, "done", job=job, record=ok[run.key]))
        elif job is not None:
            record = by_job.get(job.job_id)
            if record is None and write_failed:
                record = failed_record(run, job, store, cluster)
                results.save(record, store)
            state = "done" if record is not None and record["status"] == "ok" else "failed"
            out.append(RunState(run, state, job=job, record=record))
        else:
            out.append(RunState(run, "failed" if run.key in failed else "todo", record=failed.get(run.key)))
    return out


def to_submit(states: list[RunState]) -> list[PlannedRun]:
    """What `--resume --executor slurm` submits: no ok record and no job queued or running."""
    return [s.run for s in states if s.state in ("todo", "failed")]


def wait(store, runs: list[PlannedRun], cluster: str | None = None, poll: float = 10.0,
         timeout: float | None = None, on_change=None) -> list[RunState]:
    """Poll `status` until no planned run is queued or running (or `timeout` seconds passed)."""
    start, seen = time.monotonic(), None
    while True:
        states = status(store, runs, cluster)
        summary = counts(states)
        if on_change and summary != seen:
            on_change(states)
        seen = summary
        if not summary.get("queued") and not summary.get("running"):
            return states
        if timeout is not None and time.monotonic() - start > timeout:
            return states
        time.sleep(poll)


def counts(states: list[RunState]) -> dict:
    out = {}
    for s in states:
        out[s.state] = out.get(s.state, 0) + 1
    return out


def state_rows(states: list[RunState]) -> list[dict]:
    """One plain row per planned run (the --status table, and its JSON form)."""
    rows = []
    for s in states:
        node = (s.job.nodes if s.job else "") or ((s.record or {}).get("environment") or {}).get("hostname") or ""
        rows.append({"state": s.state, "repeat": s.run.plan["repeat"], "label": s.run.label,
                     "plan": s.run.plan["config"], "job": s.job.job_id if s.job else None,
                     "slurm_state": s.job.state if s.job else None, "node": node or None, "reason": s.reason})
    return rows


def format_status(states: list[RunState]) -> str:
    """The `suite FILE --status` table: one line per planned run, then the counts."""
    lines = [f"{'state':8s} {'repeat':>6s}  {'implementation':32s} {'job':>8s}  {'node':12s} reason"]
    for row in state_rows(states):
        lines.append(f"{row['state']:8s} {row['repeat']:>6}  {row['label']:32s} {row['job'] or '':>8s}  "
                     f"{row['node'] or '':12s} {row['reason']}")
    lines.append(", ".join(f"{n} {state}" for state, n in sorted(counts(states).items())))
    return "\n".join(lines)
