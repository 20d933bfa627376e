"""The harness against a plain script: the harness's PyTorch run vs the script a user would write,
each in its own fresh process, interleaved.

    .venv/bin/python bench/harness_overhead.py [--model cnn] [--samples 2048] [--epochs 3] [--rounds 10]
        [--arms harness,bare] [--no-fingerprint]

Arms (every round runs each arm once, each in a fresh process, the order rotated by one per round):
  harness          `python -m harness run --framework pytorch --model M --data synthetic --samples N
                   --epochs E --quiet --format json`: the CLI, its worker, the record (stderr a file, so
                   the progress display is off, as under a scheduler)
  harness:tty      the same without --quiet, its stderr a pseudo-terminal: the progress display a user
                   at a terminal sees, redrawn by the parent while the worker trains
  bare             bench/bare_loop.py in a fresh `python`: the same prepared bytes (np.load), the same
                   nn.Module, init and optimiser, the harness's epoch order, a plain loop
  bare:T[+T...]    the plain script with what the worker does differently, one thing (or several) at a
                   time: imports (harness.worker's imports first), mmap (arrays opened as the worker
                   opens them), progress (JSON progress lines to a pipe, read by this process),
                   trainer (the harness's TorchTrainer.train_epoch instead of the plain loop), env (the
                   worker's process set-up: its own session, stdin /dev/null, PYTHONUNBUFFERED, output
                   to a file); bare:all = all of them
For the harness arms it also reads the CLI process's own CPU seconds (not its worker's): what the
parent takes from the cores its worker trains on (the progress display's redraws, at a terminal).
A run's s/epoch is the median of its steady epochs (after the first). Each arm's s/epoch: the
geometric mean over rounds with its 95 % t interval; each arm against `bare`: the geometric mean
of the per-round ratios (paired by round: they ran back to back) with its 95 % t interval
(harness.bindings.ratio_interval). The goal for `harness` is <= 1.01.

Before the rounds (unless --no-fingerprint) the harness's worker and the plain script each report
their process state (threads, affinity, priority, denormal flags, allocator and BLAS libraries,
huge pages, modules, environment; bench/bare_loop.py fingerprint()): the keys where they differ
are the hypotheses worth timing, and identical keys rule theirs out.

Writes bench/results/harness_overhead-<model>-<UTC time>.json and prints the table.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BARE = REPO / "bench" / "bare_loop.py"
TOGGLES = ("imports", "mmap", "progress", "trainer", "env")
DEFAULT_ARMS = "harness,bare"
ALL_ARMS = "harness,harness:tty,bare,bare:imports,bare:mmap,bare:progress,bare:trainer,bare:env,bare:all"


# --------------------------------------------------------------------------- the worker as a probe
def probed_train(job, opened, events):
    """The worker's own train mode, then this process's fingerprint (bench/bare_loop.py)."""
    import importlib.util

    from harness.benchmark import run_train

    result = run_train(job, opened, events)
    spec = importlib.util.spec_from_file_location("bare_loop", BARE)
    bare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bare)
    result["fingerprint"] = bare.fingerprint()
    return result


def worker_probe(argv) -> int:
    """Run as the harness's worker (`--worker-probe JOB --events-fd N`), its train mode probed."""
    import harness.worker as worker

    worker.MODES["train"] = "__main__:probed_train"
    return worker.main(argv)


def fingerprints(python, prepared, model: str, env: dict) -> dict:
    """{"worker": ..., "bare": ...}: each process's state after one short epoch."""
    from harness import launch, parallel
    from harness.protocol import RunOptions
    from harness.registry import select as select_impl

    (impl,) = select_impl("python", "pytorch", None, model)
    launch_worker = parallel.launch
    parallel.launch = lambda impl, options, python, args: ([str(python), str(Path(__file__).resolve()),
                                                            "--worker-probe", *args], {})
    try:
        outcome = launch.run_worker(impl, RunOptions(seed=0), "train", prepared, epochs=1, batch_size=64, timeout=900)
    finally:
        parallel.launch = launch_worker
    if outcome.status != "ok":
        raise RuntimeError(f"the probed worker failed: {outcome.error}\n{outcome.log}")
    bare = run_bare(python, prepared, model, 1, (), env, fingerprint=True)
    return {"worker": outcome.result["fingerprint"], "bare": bare["fingerprint"]}


def differences(prints: dict) -> dict:
    w, b = prints["worker"], prints["bare"]
    return {k: {"worker": w.get(k), "bare": b.get(k)} for k in sorted(set(w) | set(b)) if w.get(k) != b.get(k)}


# --------------------------------------------------------------------------- the arms
def run_harness(python, model: str, samples: int, epochs: int, data_dir: str, tty: bool) -> dict:
    """One `python -m harness run` (a fresh CLI process and its worker); the record's epochs, and the
    CPU seconds the CLI process itself used (its own, not its worker's: /proc/PID/stat utime + stime,
    read until it exits): what the parent takes from the cores its worker trains on."""
    with tempfile.TemporaryDirectory(prefix="harness-overhead-") as out:
        command = [str(python), "-m", "harness", "run", "--framework", "pytorch", "--model", model, "--data",
                   "synthetic", "--samples", str(samples), "--epochs", str(epochs), "--out", out,
                   "--format", "json", "--data-dir", data_dir] + ([] if tty else ["--quiet"])
        env = dict(os.environ, PYTHONPATH=str(REPO))
        slave = None
        if tty:  # stderr a terminal of 40 x 120: rich draws the progress bars there, as for a user
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            threading.Thread(target=_drain, args=(master,), daemon=True).start()
            env.pop("COLUMNS", None)
        with open(Path(out) / "stderr.log", "wb") as err:
            proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=slave if tty else err, stdin=subprocess.DEVNULL)
            if slave is not None:
                os.close(slave)
            stdout = []
            reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True)
            reader.start()
            cpu = _own_cpu_until_exit(proc)
            reader.join()
        if proc.returncode != 0:
            raise RuntimeError(f"harness run failed ({proc.returncode}): {stdout[0][-2000:]!r}")
        record = json.loads(stdout[0])
    return {"epochs": [{"epoch": e["epoch"], "seconds": e["seconds"], "loss": e["loss"]} for e in record["epochs"]],
            "threads": record["info"].get("fast_path", {}).get("intra_op_threads"), "parent_cpu_s": cpu,
            "wall_s": record["timing"].get("wall_s")}


def _own_cpu_until_exit(proc, every: float = 0.1) -> float | None:
    """The last reading of the process's own CPU seconds (user + system) before it exits."""
    tick, last = os.sysconf("SC_CLK_TCK"), None
    while proc.poll() is None:
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            last = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(every)
    return last


def _drain(fd: int) -> None:
    """Read a pseudo-terminal's output until it closes (a full terminal would block the writer)."""
    while True:
        try:
            if not os.read(fd, 1 << 16):
                break
        except OSError:
            break
    os.close(fd)


def run_bare(python, prepared, model: str, epochs: int, toggles, env: dict, fingerprint: bool = False) -> dict:
    """bench/bare_loop.py in a fresh process, with the worker's differences `toggles`."""
    command = [str(python), str(BARE), str(prepared.folder), "--model", model, "--samples", str(prepared.n_train),
               "--epochs", str(epochs), "--like", ",".join(t for t in toggles if t != "env")]
    if fingerprint:
        command.append("--fingerprint")
    env = dict(env, PYTHONPATH=str(REPO))
    kwargs = {}
    read_fd = None
    if "progress" in toggles:
        read_fd, write_fd = os.pipe()
        env["BARE_PROGRESS_FD"] = str(write_fd)
        kwargs["pass_fds"] = (write_fd,)
    if "env" in toggles:  # the launcher's process set-up for a worker (harness/launch.py)
        env["PYTHONUNBUFFERED"] = "1"
        kwargs.update(start_new_session=True, stdin=subprocess.DEVNULL)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, **kwargs)
        events = []
        if read_fd is not None:
            os.close(write_fd)
            reader = threading.Thread(target=_read_events, args=(read_fd, events), daemon=True)
            reader.start()
        stdout, _ = proc.communicate()
        if read_fd is not None:
            reader.join(timeout=5)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"bare_loop.py failed ({proc.returncode}): {err.read()[-2000:].decode(errors='replace')}")
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    out["progress_events"] = len(events)
    return out


def _read_events(fd: int, events: list) -> None:
    """What the harness's parent does with a worker's event pipe: select, read, split lines, parse."""
    buf = b""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            select.select([pipe], [], [])
            chunk = pipe.read(1 << 16)
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            events += [json.loads(line) for line in lines]


def parse_arm(arm: str) -> tuple[str, tuple[str, ...]]:
    kind, _, rest = arm.partition(":")
    if kind == "harness":
        if rest not in ("", "tty"):
            raise SystemExit(f"error: arm {arm!r}: harness takes no toggle but tty")
        return kind, (rest,) if rest else ()
    if kind != "bare":
        raise SystemExit(f"error: arm {arm!r}: choices are harness, harness:tty, bare, bare:{'|'.join(TOGGLES)}[+...], "
                         "bare:all")
    toggles = TOGGLES if rest == "all" else tuple(filter(None, rest.split("+")))
    bad = set(toggles) - set(TOGGLES)
    if bad:
        raise SystemExit(f"error: arm {arm!r}: unknown toggle(s) {', '.join(sorted(bad))}; choices: {', '.join(TOGGLES)}")
    return kind, toggles


def steady(run: dict) -> float:
    return statistics.median(e["seconds"] for e in run["epochs"][1:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn", choices=("cnn", "resnet50", "rnn"))
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=3, help="per run; the first is the warm-up (default: 3)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default: 10)")
    p.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma-separated (default: {DEFAULT_ARMS}; 'all': {ALL_ARMS})")
    p.add_argument("--no-fingerprint", action="store_true", help="skip the process-state comparison")
    p.add_argument("--data-dir", default=os.environ.get("DL_ROSETTA_DATA"))
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first is the warm-up)")
    arms = [a.strip() for a in (ALL_ARMS if args.arms == "all" else args.arms).split(",") if a.strip()]
    parsed = {arm: parse_arm(arm) for arm in arms}
    if "bare" not in arms:
        arms.insert(0, "bare")
        parsed["bare"] = ("bare", ())

    from harness import bindings, data, environment
    from harness.interpreters import interpreter
    from harness.specs import get_spec

    python = interpreter("main")
    spec = get_spec(args.model)
    data_dir = args.data_dir or str(Path.home() / ".cache" / "dl-rosetta")
    prepared = data.prepare("synthetic", spec, args.samples, data_dir)
    env = dict(os.environ)

    prints = None
    if not args.no_fingerprint:
        prints = fingerprints(python, prepared, args.model, env)
        for key, both in differences(prints).items():
            print(f"differs: {key}: worker {both['worker']!r} / bare {both['bare']!r}", file=sys.stderr)

    runs = {arm: [] for arm in arms}
    for r in range(args.rounds):
        order = arms[r % len(arms):] + arms[:r % len(arms)]  # rotated: no arm always first or last
        line = []
        for arm in order:
            kind, toggles = parsed[arm]
            if kind == "harness":
                run = run_harness(python, args.model, args.samples, args.epochs, data_dir, tty="tty" in toggles)
            else:
                run = run_bare(python, prepared, args.model, args.epochs, toggles, env)
            run.update(round=r, position=order.index(arm), load_1m=os.getloadavg()[0])
            runs[arm].append(run)
            line.append(f"{arm} {steady(run):.3f}")
        print(f"round {r}: " + "  ".join(line), file=sys.stderr)

    base = {run["round"]: steady(run) for run in runs["bare"]}
    summary = {}
    for arm in arms:
        values = {run["round"]: steady(run) for run in runs[arm]}
        s, low, high = bindings.geometric_interval(values.values())
        ratio = bindings.ratio_interval(values, base) if arm != "bare" else (1.0, None, None, "reference")
        summary[arm] = {"s_per_epoch": s, "low": low, "high": high, "ratio_to_bare": ratio[0],
                        "ratio_low": ratio[1], "ratio_high": ratio[2], "ratio_method": ratio[3],
                        "final_loss": runs[arm][-1]["epochs"][-1]["loss"],
                        "parent_cpu_s": statistics.median([run["parent_cpu_s"] for run in runs[arm]])
                        if all(run.get("parent_cpu_s") is not None for run in runs[arm]) else None}
    result = {
        "benchmark": "harness_overhead", "model": args.model, "samples": args.samples, "batch_size": spec.batch_size,
        "epochs": args.epochs, "rounds": args.rounds, "arms": arms, "summary": summary, "runs": runs,
        "fingerprints": prints, "fingerprint_differences": differences(prints) if prints else None,
        "environment": environment.collect(), "command": "python " + " ".join(sys.argv),
    }
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = Path(args.out) / f"harness_overhead-{args.model}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"{args.model}, {args.samples} examples, batch {spec.batch_size}, {args.rounds} rounds "
          f"(s/epoch: geometric mean over rounds, 95 % t interval; x bare: paired by round):")
    for arm, s in summary.items():
        ratio = "" if arm == "bare" else (f"  x bare {s['ratio_to_bare']:.3f}"
                                          + (f" ({s['ratio_low']:.3f}-{s['ratio_high']:.3f})"
                                             if s["ratio_low"] == s["ratio_low"] else ""))
        parent = f"  (CLI process's own CPU {s['parent_cpu_s']:.2f} s a run)" if s.get("parent_cpu_s") else ""
        print(f"  {arm:<28} {s['s_per_epoch']:.3f} s/epoch ({s['low']:.3f}-{s['high']:.3f}){ratio}{parent}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker-probe":
        code = worker_probe(sys.argv[2:])
        sys.stdout.flush()
        os._exit(code)  # as the worker does
    raise SystemExit(main())
