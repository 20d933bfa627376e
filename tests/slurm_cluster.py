"""A real Slurm cluster on localhost for the tests: Debian's munged, slurmctld and two slurmd.

Everything lives in one temporary folder: the MUNGE key and socket, slurm.conf, the controller's
state, each slurmd's spool, the logs. The daemons listen on free ports and run in the foreground as
this process's children, so several clusters (xdist workers, other checkouts) can run side by
side and none outlives its tests. Clients and jobs find the cluster through SLURM_CONF, which the
fixture sets for the module's tests.

The configuration is the smallest that behaves like a cluster: two nodes on this one machine, each
its own slurmd on its own port (Slurm's NodeName/Port; slurmd -N), named after this machine's host
name and `localhost` so that both resolve (a multi-node launch meets at the first node's name),
2 CPUs each, in partition "debug"; an exclusive job takes a whole node, so two run at a time, and
a job with --nodes=2 gets both. No cgroups (proctrack/linuxproc, task/none); no accounting, since
Slurm 22.05's
AccountingStorageType offers only none or slurmdbd (a database server): `sacct` answers "Slurm
accounting storage is disabled", so job states come from `squeue --states=all`, which keeps an
ended job, its state (CANCELLED, TIMEOUT, ...) and reason for MinJobAge seconds. KillWait=5 ends a
cancelled job's processes 5 s after its SIGTERM (default 30).

Where the packages are missing (`python3 -m harness setup --all` installs them) or the daemons do
not start, the fixture skips with the reason (the daemon's log tail)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = {"munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client",
            "squeue": "slurm-client", "srun": "slurm-client", "scontrol": "slurm-client"}
PARTITION = "debug"
CPUS = 2
START_TIMEOUT = 30  # seconds until the node must be idle


class ClusterError(RuntimeError):
    pass


@dataclass
class Cluster:
    folder: Path
    conf: Path
    nodes: tuple  # Slurm's node names, each a name of this machine
    host: str  # this machine's host name (what every record names as its hostname)
    partition: str
    procs: dict  # daemon name -> Popen

    @property
    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for log in sorted((self.folder / "log").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)


def unavailable() -> str | None:
    """Why no cluster can start here, or None."""
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None
                      and not Path(f"/usr/sbin/{tool}").exists()})
    if missing:
        return (f"Slurm is not installed (missing Debian package(s) {', '.join(missing)}): "
                "python3 -m harness setup --all")
    if os.geteuid() != 0:
        return f"slurmd must run as root to start jobs (this is uid {os.geteuid()})"
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def node_names(host: str) -> tuple:
    """The two nodes' names: this machine's host name and localhost (both resolve here)."""
    return (host, "localhost") if host != "localhost" else (host,)


def slurm_conf(folder: Path, host: str, ctld_port: int, slurmd_ports: list[int]) -> str:
    f = folder
    nodes = node_names(host)
    return "\n".join([
        f"ClusterName=dlr{ctld_port}",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={f}/munge/munge.socket",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={f}/state",
        f"SlurmdSpoolDir={f}/spool/%n",  # %n: the node's name, one slurmd each
        f"SlurmctldPidFile={f}/slurmctld.pid",
        f"SlurmdPidFile={f}/slurmd-%n.pid",
        f"SlurmctldLogFile={f}/log/slurmctld.log",
        f"SlurmdLogFile={f}/log/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc",  # no cgroups
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/builtin",
        "SlurmdParameters=config_overrides",  # trust CPUs= even on a machine with fewer
        "MinJobAge=300",  # ended jobs stay in squeue --states=all for 5 minutes
        "KillWait=5",
        "ReturnToService=2",
        "MpiDefault=none",
        "MailProg=/bin/true",
        *[f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs={CPUS} State=UNKNOWN"
          for n, port in zip(nodes, slurmd_ports)],
        f"PartitionName={PARTITION} Nodes={','.join(nodes)} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def start(folder: Path) -> Cluster:
    """Start munged, slurmctld and slurmd in `folder`; returns once the node is idle."""
    folder = Path(folder)
    for sub in ("munge", "state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(folder / "munge", 0o755)  # munged wants its socket's folder searchable by all
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]  # slurmctld and slurmd check their host's name
    nodes = node_names(host)
    ctld_port, *slurmd_ports = _free_ports(1 + len(nodes))
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, host, ctld_port, slurmd_ports))
    for node in nodes:
        (folder / "spool" / node).mkdir()
    cluster = Cluster(folder, conf, nodes, host, PARTITION, {})
    env = cluster.env
    m = folder / "munge"
    daemons = {
        "munged": [_tool("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={m}/munge.socket",
                   f"--pid-file={m}/munged.pid", f"--log-file={folder}/log/munged.log", f"--seed-file={m}/munged.seed"],
        "slurmctld": [_tool("slurmctld"), "-D", "-i", "-f", str(conf)],
        **{f"slurmd-{node}": [_tool("slurmd"), "-D", "-f", str(conf), "-N", node] for node in nodes},
    }
    try:
        for name, cmd in daemons.items():
            with open(folder / "log" / f"{name}.out", "w") as out:
                cluster.procs[name] = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                       stdin=subprocess.DEVNULL, start_new_session=True)
            _wait_started(cluster, name)
        _wait_idle(cluster)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def _wait_started(cluster: Cluster, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if cluster.procs[name].poll() is not None:
            out = (cluster.folder / "log" / f"{name}.out").read_text(errors="replace")
            raise ClusterError(f"{name} exited with code {cluster.procs[name].returncode}: "
                               f"{out.strip()[-800:]}\n{cluster.log_tail()}")
        if name != "munged" or (cluster.folder / "munge" / "munge.socket").exists():
            return
        time.sleep(0.1)
    raise ClusterError(f"{name} did not start within {START_TIMEOUT} s\n{cluster.log_tail()}")


def _wait_idle(cluster: Cluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    state = ""
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with code {proc.returncode}\n{cluster.log_tail()}")
        proc = cluster.run("sinfo", "--noheader", "--Node", "--format=%N %T", timeout=20)
        state = proc.stdout.strip() or proc.stderr.strip()
        if proc.returncode == 0 and sorted(state.split()) == sorted([*cluster.nodes, *["idle"] * len(cluster.nodes)]):
            return
        time.sleep(0.3)
    raise ClusterError(f"nodes {','.join(cluster.nodes)} not idle after {START_TIMEOUT} s (sinfo: {state})\n"
                       f"{cluster.log_tail()}")


def stop(cluster: Cluster) -> None:
    """Cancel the cluster's jobs, shut the daemons down (SIGKILL after 15 s), remove nothing."""
    if cluster.procs.get("slurmctld") and cluster.procs["slurmctld"].poll() is None:
        jobs = cluster.run("squeue", "--noheader", "--format=%i", timeout=20).stdout.split()
        if jobs:
            cluster.run("scancel", *jobs, timeout=20)
            deadline = time.monotonic() + 15  # KillWait 5 s: their processes end before slurmd does
            while time.monotonic() < deadline and cluster.run(
                    "squeue", "--noheader", "--format=%i", "--states=PENDING,RUNNING,COMPLETING").stdout.strip():
                time.sleep(0.5)
        cluster.run("scontrol", "shutdown", timeout=20)
    for name in (*[f"slurmd-{n}" for n in cluster.nodes], "slurmctld", "munged"):
        proc = cluster.procs.get(name)
        if proc is None:
            continue
        if name == "munged" and proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running cluster of two nodes on this machine; SLURM_CONF points the tests' Slurm clients
    (and their jobs) at it."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    try:
        cluster = start(tmp_path_factory.mktemp("slurm"))
    except ClusterError as e:
        pytest.skip(f"Slurm's daemons did not start: {e}")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        stop(cluster)
