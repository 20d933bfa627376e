"""Language bindings side by side (harness/bindings.py, report --view bindings, --variant, the
R data paths and loops, bench/bindings_table.py).

The statistics are checked on records with chosen epoch times (tests/fake_records.py): known
ratios, drifts and per-step costs must come back with intervals that hold them. The R variants
are checked on the real R runtime (skipped where R cannot run)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fake_records
from conftest import REPO, harness_json
from harness import bindings, results, runtimes, schedule, stats
from harness.cli import main as cli
from harness.errors import UsageError
from harness.registry import select
from harness.requests import DeviceSetup, RunRequest, Selection, check_setup


def record(lang, framework, backend, steady, repeat, batch=64, variant=None, loss=0.3, first=20.0, samples=2048,
           env=None, load=0.5, r_facts=None):
    """A run with `steady` as its steady epochs' seconds (the first epoch takes `first`)."""
    r = fake_records.record(framework=framework, lang=lang, backend=backend, seconds=[first, *steady], repeat=repeat,
                            samples=samples, env=env)
    steps = samples // batch
    r["config"]["batch_size"] = batch
    for e in r["epochs"]:
        e.update(steps=steps, examples=steps * batch, examples_per_s=steps * batch / e["seconds"])
    if variant:
        r["config"]["extra"] = {"variant": variant}
    r["metrics"]["final_loss"] = loss
    r["load_average"]["before"][0] = load
    r["timing"]["data_s"] = 0.002
    if r_facts:
        r["info"]["r"] = r_facts
    return r


def table_records(drift_sd=0.1, noise_sd=0.005, seed=0):
    """5 interleaved repeats: Python Keras (TF) 10 s, R Keras (TF) 10.5 s (x1.05), R's train_on_batch
    loop 12 s, PyTorch 8 s, C++ LibTorch 7.6 s (x0.95), TensorFlow alone; each repeat's machine drift
    hits every row of that repeat alike."""
    rng = np.random.default_rng(seed)
    out = []
    for rep in range(5):
        drift = math.exp(drift_sd * rng.standard_normal())

        def t(s):
            return [s * drift * math.exp(noise_sd * rng.standard_normal()) for _ in range(2)]

        out += [record("python", "keras", "tensorflow", t(10.0), rep),
                record("r", "keras", "tensorflow", t(10.5), rep, loss=0.305, first=25.0,
                       r_facts={"r_start_s": 1.5, "reticulate_s": 4.0}),
                record("r", "keras", "tensorflow", t(12.0), rep, variant={"loop": "train_on_batch"}),
                record("python", "pytorch", None, t(8.0), rep),
                record("cpp", "libtorch", None, t(7.6), rep, loss=0.5),
                record("python", "tensorflow", None, t(9.0), rep)]
    return out


def line(table, lang, framework, variant=None):
    rows = table[(table["lang"] == lang) & (table["framework"] == framework)
                 & table["variant"].map(lambda v: (None if isinstance(v, float) else v) == variant)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_table_pairs_each_binding_with_its_python_framework():
    t = bindings.table(table_records())
    got = {(r["family"], r["lang"], r["framework"], None if isinstance(r["variant"], float) else r["variant"])
           for _, r in t.iterrows()}
    assert got == {("keras", "python", "keras", None), ("keras", "r", "keras", None),
                   ("keras", "r", "keras", "loop=train_on_batch"), ("pytorch", "python", "pytorch", None),
                   ("pytorch", "cpp", "libtorch", None)}, "TensorFlow has no binding: not in the table"
    r = line(t, "r", "keras")
    assert r["runs"] == 5 and r["ratio_method"] == "paired"
    assert r["ratio_low"] < 1.05 < r["ratio_high"] and r["ratio_high"] - r["ratio_low"] < 0.02, r
    # the machine's drift (10 % between repeats) widens each language's own interval, not the paired ratio
    assert r["steady_high"] / r["steady_low"] > 1.1
    cpp = line(t, "cpp", "libtorch")
    assert cpp["ratio_low"] < 0.95 < cpp["ratio_high"]
    tob = line(t, "r", "keras", "loop=train_on_batch")
    assert tob["vs_default_low"] < 12 / 10.5 < tob["vs_default_high"]
    assert r["runtime_s"] == pytest.approx(5.5) and r["first_epoch_s"] == 25.0 and r["handoff_s"] == 0.002
    assert r["loss_agrees"] and not cpp["loss_agrees"] and cpp["loss_diff"] == pytest.approx(0.5 / 0.3 - 1)
    assert line(t, "python", "keras")["ratio"] == 1.0


def test_unpaired_runs_get_welchs_interval():
    recs = [r for r in table_records(drift_sd=0.0, noise_sd=0.01)
            if not (r["impl"]["lang"] == "r" and r["config"]["repeat"] == 4)]
    r = line(bindings.table(recs), "r", "keras")
    assert r["runs"] == 4 and r["ratio_method"] == "unpaired"
    assert r["ratio_low"] < 1.05 < r["ratio_high"]


def test_intervals_are_the_t_intervals_on_logs():
    from scipy import stats as st

    a, b = {0: 1.0, 1: 1.2, 2: 1.1}, {0: 0.9, 1: 1.0, 2: 1.05}
    ratio, low, high, method = bindings.ratio_interval(a, b)
    d = np.log([a[k] / b[k] for k in a])
    ci = st.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=st.sem(d))
    assert method == "paired" and ratio == pytest.approx(math.exp(d.mean()))
    assert (low, high) == pytest.approx((math.exp(ci[0]), math.exp(ci[1])))
    g, lo, hi = bindings.geometric_interval([2.0, 8.0])
    assert g == pytest.approx(4.0) and lo < 4.0 < hi
    assert math.isnan(bindings.geometric_interval([3.0])[1]), "one run: no interval"


def overhead_records(truth, repeats=3, noise_sd=0.01, seed=1, batches=(16, 64, 256)):
    """Runs at each batch size (default 16, 64 and 256) whose step time is a + b * batch; truth:
    (lang, framework, backend, variant) -> (a, b) in seconds, variant a ("key", "value") pair or None."""
    rng = np.random.default_rng(seed)
    out = []
    for rep in range(repeats):
        for batch in batches:
            drift = math.exp(0.05 * rng.standard_normal())
            for (lang, framework, backend, pair), (a, b) in truth.items():
                variant = dict([pair]) if pair else None
                steps = 2048 // batch
                steady = [steps * (a + b * batch) * drift * math.exp(noise_sd * rng.standard_normal())
                          for _ in range(2)]
                out.append(record(lang, framework, backend, steady, rep, batch=batch, variant=variant))
    return out


def test_overhead_fit_recovers_per_step_and_per_example_costs():
    truth = {("python", "keras", "tensorflow", None): (2000e-6, 150e-6),
             ("r", "keras", "tensorflow", None): (2600e-6, 150e-6),
             ("r", "keras", "tensorflow", ("loop", "train_on_batch")): (4600e-6, 150e-6),
             ("python", "pytorch", None, None): (1000e-6, 100e-6),
             ("cpp", "libtorch", None, None): (990e-6, 100e-6)}
    fits = bindings.overhead(overhead_records(truth))
    assert len(fits) == 5
    for (lang, framework, _, variant), (a, b) in truth.items():
        f = line(fits, lang, framework, "=".join(variant) if variant else None)
        assert f["runs"] == 9 and f["batches"] == "16, 64, 256"
        assert f["a_low_us"] < a * 1e6 < f["a_high_us"] and f["b_low_us"] < b * 1e6 < f["b_high_us"], f
    r = line(fits, "r", "keras")
    assert r["da_method"] == "paired" and r["da_low_us"] < 600 < r["da_high_us"] and r["da_low_us"] > 0, \
        "R's 600 µs per step shows apart from zero"
    tob = line(fits, "r", "keras", "loop=train_on_batch")
    assert tob["da_default_low_us"] < 2000 < tob["da_default_high_us"], "the loop's crossing: 2,000 µs a step"
    cpp = line(fits, "cpp", "libtorch")
    assert cpp["da_low_us"] < -10 < cpp["da_high_us"]
    assert math.isnan(line(fits, "python", "keras")["da_us"])


def test_sections_are_never_pooled_and_a_lone_language_has_no_row():
    other = dict(fake_records.ENV, git={"commit": "f" * 40, "dirty": False})
    recs = table_records()
    recs += [record("r", "keras", "tensorflow", [11.0, 11.0], rep, env=other) for rep in range(5)]
    t = bindings.table(recs)
    assert set(t["commit_key"]) == {"0123456789ab"}, "R alone at another commit: nothing to compare with"
    assert (t["runs"] == 5).all()


def test_loaded_rows_are_flagged():
    recs = table_records()
    recs[1]["load_average"]["before"][0] = 20.0  # R's first run began on a busy machine (8 cores)
    t = bindings.table(recs)
    assert line(t, "r", "keras")["loaded"] and not line(t, "python", "keras")["loaded"]


def test_report_view_bindings(tmp_path, capsys):
    store = tmp_path / "store"
    for r in table_records() + overhead_records({("python", "pytorch", None, None): (1e-3, 1e-4),
                                                 ("cpp", "libtorch", None, None): (9e-4, 1e-4)}):
        results.save(r, store)
    assert cli(["report", str(store), "--view", "bindings", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "#### Bindings: CPU, fp32" in out and "| R Keras (TF) | cnn | 64 |" in out
    assert "#### Per-step overhead, step = a + b·batch" in out and "| C++ LibTorch | cnn |" in out
    assert (tmp_path / "out" / "bindings.md").read_text().strip() == out.strip()
    csv = (tmp_path / "out" / "bindings.csv").read_text().splitlines()
    assert csv[0].startswith("machine,") and "ratio_low" in csv[0]
    assert (tmp_path / "out" / "bindings-overhead.csv").exists()

    alone = tmp_path / "alone"
    results.save(record("python", "pytorch", None, [1.0, 1.0], 0), alone)
    assert cli(["report", str(alone), "--view", "bindings"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no framework with runs in Python and another language" in err


# ---- --variant ------------------------------------------------------------------------------

def test_variant_is_checked_against_the_implementation():
    (r_cnn,) = select("r", "keras", "tensorflow", "cnn")
    (torch_cnn,) = select("python", "pytorch", None, "cnn")
    check_setup(DeviceSetup(variant=(("data", "r-arrays"), ("loop", "train_on_batch"))), [r_cnn])
    with pytest.raises(UsageError, match=r"--variant loop=fast: not a variant of r/keras\[tensorflow\]/cnn; "
                                         r"choices: data=numpy\|r-arrays; loop=fit\|train_on_batch"):
        check_setup(DeviceSetup(variant=(("loop", "fast"),)), [r_cnn])
    with pytest.raises(UsageError, match="python/pytorch/cnn has no variants; only r/keras do"):
        check_setup(DeviceSetup(variant=(("loop", "fit"),)), [torch_cnn])


@pytest.mark.parametrize("args, message", [
    (["--variant", "loop"], "'loop' is not KEY=VALUE"),
    (["--variant", "loop=train_on_batch"], "python/pytorch/cnn has no variants"),
])
def test_bad_variant_is_one_line_exit_2(args, message, capsys):
    try:
        code = cli(["run", "--framework", "pytorch", "--model", "cnn", *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_variant_reaches_options_plan_and_its_own_row():
    (impl,) = select("r", "keras", "tensorflow", "cnn")
    plain = RunRequest(Selection("r", "keras", "tensorflow", "cnn"))
    loop = RunRequest(Selection("r", "keras", "tensorflow", "cnn"),
                      DeviceSetup(variant=(("loop", "train_on_batch"),)))
    assert "variant" not in plain.planned("cnn"), "a run without a variant keeps the digest it always had"
    assert schedule.plan_digest(impl, plain) != schedule.plan_digest(impl, loop)
    assert loop.options(impl).extra == {"variant": {"loop": "train_on_batch"}} and plain.options(impl).extra == {}
    recs = [record("r", "keras", "tensorflow", [1.0, 1.0], 0), record("r", "keras", "tensorflow", [2.0, 2.0], 0,
                                                                      variant={"loop": "train_on_batch"})]
    summary = stats.summarize(results.to_frame(recs))
    assert sorted(summary["median_s"]) == [1.0, 2.0], "a variant is never pooled with the default"
    from harness.summary import row_name

    assert {row_name(r) for _, r in summary.iterrows()} == {"R Keras 2.13.0 (TF)",
                                                            "R Keras 2.13.0 (TF), loop=train_on_batch"}


# ---- the R data paths and loops on the real R runtime -------------------------------------------

(R_CNN,) = select("r", "keras", "tensorflow", "cnn")
R_REASON = runtimes.availability(R_CNN)
needs_r = pytest.mark.skipif(bool(R_REASON), reason=R_REASON or "")

R_VARIANTS = r'''
import hashlib, json, sys
import numpy as np
from harness.protocol import Batches, RunOptions, epoch_batches
from harness.registry import select
from harness.runtimes import r
from harness.specs import get_spec

out = {}
for model in ("cnn", "rnn"):
    (impl,) = select("r", "keras", "tensorflow", model)
    spec = get_spec(model)
    r.import_framework(impl, RunOptions(backend="tensorflow"))
    rng = np.random.default_rng(0)
    x = (rng.random((96, 32, 32, 3), dtype=np.float32) if model == "cnn"
         else rng.integers(0, spec.arch.vocab, (96, 150)).astype(np.int64))
    y = (np.arange(96) % spec.num_classes).astype(np.int64)
    for variant in ({}, {"loop": "train_on_batch"}, {"data": "r-arrays"}, {"data": "r-arrays", "loop": "train_on_batch"}):
        t = r.build(impl, spec, RunOptions(backend="tensorflow", extra={"variant": variant} if variant else {}))
        t.fit_data(x, y)
        losses = [t.train_epoch(Batches(epoch_batches(96, 32, 0, e))).tolist() for e in range(2)]
        out.setdefault(model, {})[",".join(f"{k}={v}" for k, v in sorted(variant.items())) or "default"] = {
            "losses": losses, "variant": t.info["variant"], "loop": t.info["fast_path"]["loop"],
            "digest": t.data_digest("x") == hashlib.sha256(x.tobytes()).hexdigest(),
            "digest_y": t.data_digest("y") == hashlib.sha256(y.tobytes()).hexdigest(),
            "heap_growth": t.info["r"]["handoff"]["r_heap_growth_bytes"]}
print(json.dumps(out))
'''


@needs_r
def test_r_variants_train_the_same_steps(tmp_path):
    """numpy or R arrays, fit or an R train_on_batch loop: the same model on the same batches gives
    the same loss at every step; R arrays are R's own copy (its heap grows by the doubles)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), KERAS_BACKEND="tensorflow")
    proc = subprocess.run([sys.executable, "-c", R_VARIANTS], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    for model, out in found.items():
        default = np.array(out["default"]["losses"])
        assert default.shape == (2, 3) and np.isfinite(default).all()
        for name, got in out.items():
            np.testing.assert_allclose(got["losses"], default, rtol=1e-5, err_msg=f"{model} {name}")
            assert got["digest"] and got["digest_y"], f"{model} {name}: R holds the harness's bytes"
            assert got["variant"] == {"data": "r-arrays" if "r-arrays" in name else "numpy",
                                      "loop": "train_on_batch" if "train_on_batch" in name else "fit"}
        assert "train_on_batch" in out["loop=train_on_batch"]["loop"]
    # 96 x 3,072 pixels as R doubles: 2.4 MB on R's heap; none for the numpy hand-off
    assert found["cnn"]["data=r-arrays"]["heap_growth"] > 96 * 3072 * 8 * 0.9
    assert found["cnn"]["default"]["heap_growth"] < 96 * 3072 * 8 * 0.1


@needs_r
def test_a_variant_run_records_what_ran(data_cache, tmp_path):
    proc, rec = harness_json("--lang", "r", "--framework", "keras", "--backend", "tensorflow", "--model", "cnn",
                             "--data", "synthetic", "--samples", "64", "--epochs", "2", "--batch-size", "32",
                             "--variant", "loop=train_on_batch,data=r-arrays", "--out", str(tmp_path), "--quiet",
                             cache=data_cache)
    assert proc.returncode == 0, rec.get("error")
    assert rec["info"]["variant"] == {"data": "r-arrays", "loop": "train_on_batch"}
    assert rec["config"]["extra"] == {"variant": {"data": "r-arrays", "loop": "train_on_batch"}}
    sizes = {"epochs": 2, "batch_size": 32, "data": "synthetic", "samples": 64}
    planned = RunRequest(Selection("r", "keras", "tensorflow", "cnn"), DeviceSetup(
        variant=(("data", "r-arrays"), ("loop", "train_on_batch"))), **sizes)
    assert rec["plan"]["config"] == schedule.plan_digest(R_CNN, planned)
    assert rec["plan"]["config"] != schedule.plan_digest(R_CNN, RunRequest(
        Selection("r", "keras", "tensorflow", "cnn"), **sizes))
    assert results.index(tmp_path)["variant"].tolist() == ["data=r-arrays,loop=train_on_batch"]


# ---- bench/bindings_table.py ------------------------------------------------------------------

def test_readme_block_from_the_stores(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import bindings_table

    store, overhead = tmp_path / "table", tmp_path / "overhead"
    for r in table_records():
        results.save(r, store)
    for r in overhead_records({("python", "pytorch", None, None): (1e-3, 1e-4), ("cpp", "libtorch", None, None):
                               (9e-4, 1e-4)}):
        results.save(r, overhead)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{bindings_table.BEGIN}: not yet -->\nold\n{bindings_table.END}\n\nafter\n")
    text = bindings_table.regenerate(readme, store, [overhead])
    assert "old" not in text and text.endswith("after\n")
    assert "| R Keras (TF) | cnn | 64 |" in text and "#### Per-step overhead" in text
    assert f"--table {store} --overhead {overhead}" in text
    crossing = tmp_path / "crossing"  # binding-crossing's small batches: a second store, fitted apart
    for r in overhead_records({("python", "pytorch", None, None): (1e-3, 1e-4), ("cpp", "libtorch", None, None):
                               (8e-4, 1e-4)}, batches=(1, 4, 16)):
        results.save(r, crossing)
    text = bindings_table.regenerate(readme, store, [overhead, crossing])
    assert text.count("#### Per-step overhead") == 2 and f"--overhead {overhead} --overhead {crossing}" in text
    text = bindings_table.regenerate(readme, store, [overhead, crossing], max_loaded=3)
    assert f"--overhead {crossing} --max-loaded 3; do not edit by hand -->" in text  # the command, options and all
    assert " (16, 64, 256) |" in text and " (1, 4, 16) |" in text
    with pytest.raises(UsageError, match=r"fewer than 6 runs"):
        bindings_table.regenerate(readme, store, min_repeats=6)
    busy = tmp_path / "busy"
    for r in table_records():
        r["load_average"]["before"][0] = 20.0
        results.save(r, busy)
    with pytest.raises(UsageError, match="measured while the load exceeded the cores"):
        bindings_table.regenerate(readme, busy)


def test_published_binding_suites():
    suite = schedule.load("all-languages", check_runnable=False)
    assert suite.repeats >= 5 and set(suite.models) >= {"cnn", "rnn", "resnet50"}
    labels = {e.impl.label.rsplit("/", 1)[0] for e in suite.entries}
    assert {"python/keras[tensorflow]", "r/keras[jax]", "r/keras[torch]", "python/pytorch", "cpp/libtorch"} <= labels
    overhead = schedule.load("binding-overhead", check_runnable=False)
    assert {e.request.batch_size for e in overhead.entries} == {16, 64, 256}
    crossing = schedule.load("binding-crossing", check_runnable=False)
    assert {e.request.batch_size for e in crossing.entries} == {1, 4, 16} and crossing.repeats >= 3
    assert {e.impl.label.rsplit("/", 1)[0] for e in crossing.entries} == {
        e.impl.label.rsplit("/", 1)[0] for e in overhead.entries}
    variants = schedule.load("r-variants", check_runnable=False)
    assert {e.request.setup.variant for e in variants.entries} == {
        (), (("data", "r-arrays"),), (("loop", "train_on_batch"),), (("data", "r-arrays"), ("loop", "train_on_batch"))}
