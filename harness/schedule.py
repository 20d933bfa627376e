"""Suite definitions (`bench/suites/*.toml`): implementations x models x setups, with their options.

    description = "..."                      # optional
    repeats = 3                              # optional (default 1); --repeats overrides
    models = ["cnn"]                         # --model overrides; or per-model options:
                                             #   [models.cnn] samples = 512
    implementations = [                      # lang/framework[backend]; no backend = every backend;
        "python/pytorch",                    #   "python/*" = every framework of the language
        "python/keras",
        { impl = "python/pytorch", compile = true },   # per-implementation options
    ]
    [options]                                # every run: any option of `python -m harness run`
    data = "synthetic"
    samples = 2048
    [setups.cpu]                             # optional; each implementation x model runs once per
    device = "cpu"                           # setup (default: one setup with no extra options)

Options are the `run` command's own (`batch_size` = `--batch-size`, `compile = true` =
`--compile`) and are parsed by its parser, so a suite can say anything a run can. Later tables
override earlier ones: options < model < setup < implementation < command-line overrides. A key
must be an option's whole name (no abbreviations: `ou` is not `out`); an unknown key is refused
by name, so every record's run_args reproduce its run exactly.

A planned run is (suite, its resolved options' digest, repeat): `run_plan` is stored in the
record, and `completed` finds those already in a store for this machine and commit, which is how
`--resume` (of `suite` and of `run`) skips what was measured and reruns only the rest. A suite
run by Slurm (harness.slurm) writes from many nodes: there `completed` counts the records of one
Slurm cluster, whichever node wrote them.

`runs` is what one `run` command runs. A process started for one planned run of a suite (a Slurm
batch job) is told which in DL_ROSETTA_PLAN, the plan as JSON with the job's id, cluster and
partition: its record carries that plan, and options that do not give the plan's digest are
refused (the checkout changed since submission).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness import resources
from harness.errors import UsageError
from harness.requests import RunRequest

PLAN_ENV = "DL_ROSETTA_PLAN"  # the planned run this process answers (harness.slurm's batch job sets it)

SUITES_DIR = resources.suites_dir()  # bench/suites/ in a checkout, harness/suites/ when installed
TOP_KEYS = {"description", "repeats", "models", "implementations", "options", "setups"}
# chosen by the suite itself, never by its options
SUITE_CONTROLLED = {"lang", "framework", "backend", "model", "out", "format", "quiet", "repeats", "resume"}
# lang/framework[backend]; lang/* is every framework of the language (and every backend), so a
# suite that names a whole language picks up a framework added later
LABEL = re.compile(r"^(?:(?P<lang>[a-z]+)/)?(?P<framework>[a-z0-9_-]+|\*)(?:\[(?P<backend>[a-z0-9_-]+)\])?$")


def option_keys() -> list[str]:
    """The keys a suite's option tables may use: the `run` options a suite does not set itself."""
    from harness.cli_options import run_parser

    dests = {a.dest for a in run_parser()._actions if a.option_strings}
    return sorted(dests - SUITE_CONTROLLED)


def option_argv(options: dict, where: str) -> list[str]:
    """{"batch_size": 32, "compile": True} -> ["--batch-size", "32", "--compile"]."""
    argv = []
    known = set(option_keys())
    for key, value in options.items():
        if key in SUITE_CONTROLLED:
            raise UsageError(f"{where}: {key!r} is set by the suite itself, not as an option")
        if key not in known:
            raise UsageError(f"{where}: unknown option {key!r}; choices: {', '.join(sorted(known))}")
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if value:
                argv.append(flag)
        elif isinstance(value, (int, float, str)):
            argv += [flag, str(value)]
        else:
            raise UsageError(f"{where}: option {key!r} must be a number, string or true/false, not {value!r}")
    return argv


def plan_digest(impl, request: RunRequest) -> str:
    """What a run measures (RunRequest.planned: the options that change the work or the result,
    defaults resolved from the spec); timeouts, folders and display options are not part of it."""
    options = request.planned(impl.model)
    return hashlib.sha256(json.dumps([impl.label, options], sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_plan(impl, request: RunRequest, repeat: int, suite: str | None = None, run_args: list[str] | None = None) -> dict:
    plan = {"suite": suite, "config": plan_digest(impl, request), "repeat": repeat}
    if run_args is not None:
        plan["run_args"] = run_args
    return plan


def plan_id(plan: dict) -> tuple:
    return plan.get("suite"), plan.get("config"), plan.get("repeat")


def completed(out, machine: str | None = None, commit: str | None = None, cluster: str | None = None) -> dict:
    """{plan_id: record} of the successful runs in the store `out`: this machine's and this
    commit's by default. cluster: the records Slurm jobs of that cluster wrote, on any of its
    nodes (their plan names the cluster), instead of this machine's."""
    from harness import environment, results

    if not Path(out).exists():
        return {}
    if commit is None or (machine is None and cluster is None):
        env = environment.collect()
        commit = commit or results.commit_key(env)
        if cluster is None:
            machine = machine or results.machine_key(env)
    done = {}
    for record in results.read_records([out], machine=machine):
        plan = record.get("plan")
        if record["status"] != "ok" or not plan or results.record_key(record)["commit"] != commit:
            continue
        if cluster is not None and (not plan.get("slurm_job") or plan.get("slurm_cluster") != cluster):
            continue
        done.setdefault(plan_id(plan), record)
    return done


def given_plan(env=None) -> dict | None:
    """The planned run this process answers (DL_ROSETTA_PLAN), or None."""
    env = os.environ if env is None else env
    text = env.get(PLAN_ENV)
    if not text:
        return None
    try:
        plan = json.loads(text)
    except json.JSONDecodeError:
        plan = None
    if not isinstance(plan, dict) or not isinstance(plan.get("config"), str) or not isinstance(plan.get("repeat"), int):
        raise UsageError(f"{PLAN_ENV} is not a plan ({text[:80]!r}); it is set by harness.slurm's batch jobs, "
                         f"unset it to run by hand")
    return plan


def runs(impls, request: RunRequest, env=None) -> list[tuple[object, int, dict]]:
    """(implementation, repeat, plan) for what one `run` command runs: every implementation once
    per repeat, round-robin, so machine drift spreads over every row. Under DL_ROSETTA_PLAN only
    the planned run it names, with its repeat and plan (suite, job); options that give another
    digest are a UsageError, before any worker starts."""
    given = given_plan(env)
    if given is None:
        return [(impl, repeat, run_plan(impl, request, repeat))
                for repeat in range(request.repeats) for impl in impls]
    for impl in impls:
        if plan_digest(impl, request) == given["config"]:
            return [(impl, given["repeat"], given)]
    digests = ", ".join(plan_digest(impl, request) for impl in impls)
    raise UsageError(f"{PLAN_ENV} is plan {given['config']}, these options are plan {digests}; "
                     "submit again from this checkout")


@dataclass
class Entry:
    impl: object  # harness.registry.Implementation
    setup: str
    run_args: list[str]  # the equivalent `python -m harness run` arguments, bar --out/--repeats
    request: RunRequest  # those arguments as the run command's own parser reads them

    def plan(self, suite: str, repeat: int) -> dict:
        return run_plan(self.impl, self.request, repeat, suite, self.run_args)


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    repeats: int
    models: list[str]
    entries: list[Entry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (label, reason) not runnable here

    def schedule(self, repeats: int | None = None) -> list[tuple[Entry, int]]:
        """Round-robin: every entry once per repeat, so machine drift spreads over every row."""
        return [(e, r) for r in range(repeats or self.repeats) for e in self.entries]


def find(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.exists():
        return path
    named = SUITES_DIR / f"{name_or_path}.toml"
    if named.exists():
        return named
    known = sorted(p.stem for p in SUITES_DIR.glob("*.toml"))
    raise UsageError(f"no suite file {name_or_path!r}; choices: {', '.join(known)} (in {resources.display(SUITES_DIR)}/) or a path")


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a table of options, not {value!r}")
    return value


def load(name_or_path: str, models: list[str] | None = None, overrides: dict | None = None,
         check_runnable: bool = True, check_setup=None) -> Suite:
    """Read and expand a suite; bad keys, labels and options raise UsageError naming the file.
    check_setup(setup, impls): whether a row's device setup can run where it will run (default:
    harness.requests.check_setup, on this machine; the Slurm executor checks it for its nodes)."""
    from harness import runtimes
    from harness.cli_options import run_parser, run_request
    from harness.registry import select
    from harness.requests import check_setup as check_here
    from harness.specs import MODELS

    check_setup = check_setup or check_here

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    path = find(name_or_path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None
    unknown = set(doc) - TOP_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; choices: {', '.join(sorted(TOP_KEYS))}")
    repeats = doc.get("repeats", 1)
    if not isinstance(repeats, int) or repeats < 1:
        raise UsageError(f"{path}: repeats must be a whole number >= 1, not {repeats!r}")
    declared = doc.get("models") or []
    model_options = ({m: _table(o, f"{path}: [models.{m}]") for m, o in declared.items()}
                     if isinstance(declared, dict) else {})
    models = models or list(declared)
    if not models:
        raise UsageError(f"{path}: no models (add models = [...] or pass --model)")
    for m in models:
        if m not in MODELS:
            raise UsageError(f"{path}: unknown model {m!r}; choices: {', '.join(MODELS)}")
    options = _table(doc.get("options", {}), f"{path}: [options]")
    setups = {name: _table(s, f"{path}: [setups.{name}]") for name, s in _table(doc.get("setups", {}),
                                                                                  f"{path}: [setups]").items()}
    setups = setups or {"default": {}}
    impl_specs = doc.get("implementations")
    if not impl_specs or not isinstance(impl_specs, list):
        raise UsageError(f"{path}: no implementations (add implementations = [\"python/pytorch\", ...])")

    suite = Suite(path.stem, path, doc.get("description", ""), repeats, list(models))
    parser = run_parser()
    seen = set()
    for model in models:
        for setup_name, setup in setups.items():
            for item in impl_specs:
                own = dict(item) if isinstance(item, dict) else {"impl": item}
                label = own.pop("impl", None)
                where = f"{path}: implementation {label!r}"
                match = LABEL.match(label) if isinstance(label, str) else None
                if not match:
                    raise UsageError(f"{where}: write it as lang/framework, lang/framework[backend] or lang/*, "
                                     "e.g. python/keras[jax]")
                lang = match["lang"] or "python"
                try:
                    every = match["framework"] == "*"
                    impls = select(lang, None if every else match["framework"], match["backend"], model,
                                   include_retired=not every)
                except UsageError as e:
                    raise UsageError(f"{where}: {e}") from None
                merged = {**options, **model_options.get(model, {}), **setup, **own, **(overrides or {})}
                run_args = option_argv(merged, where)
                for impl in impls:
                    selection = ["--lang", impl.lang, "--framework", impl.name, "--model", impl.model]
                    if impl.backend:
                        selection += ["--backend", impl.backend]
                    try:
                        request = run_request(parser.parse_args(selection + run_args))
                    except UsageError as e:
                        raise UsageError(f"{where}: {e}") from None
                    entry = Entry(impl, setup_name, selection + run_args, request)
                    ident = (impl.label, plan_digest(impl, request))
                    if ident in seen:
                        raise UsageError(f"{path}: {impl.label} appears twice with the same options ({setup_name})")
                    seen.add(ident)
                    reason = runtimes.availability(impl) if check_runnable else None
                    if reason is None and check_runnable:
                        try:
                            check_setup(request.setup, [impl])
                        except UsageError as e:
                            reason = f"setup {setup_name}: {e}"
                    if reason:
                        suite.skipped.append((f"{impl.label} ({setup_name})", reason))
                    else:
                        suite.entries.append(entry)
    return suite
