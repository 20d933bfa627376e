"""The results store (append-only, atomic, keyed) and the statistics computed from it."""
from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest

from fake_records import ENV, record
from harness import results, stats


def test_save_writes_record_and_epochs_with_keys(tmp_path):
    r = record(seconds=(3.0, 1.0, 1.1))
    path = results.save(r, tmp_path)
    assert path == tmp_path / f"{r['run_id']}.json"
    saved = json.loads(path.read_text())
    assert saved["schema"] == results.SCHEMA
    assert saved["key"]["machine"] == "feedfacecafe"
    assert saved["key"]["commit"] == "0123456789ab"
    assert len(saved["key"]["env"]) == 12 and len(saved["key"]["config"]) == 12
    assert (tmp_path / f"{r['run_id']}.epochs.csv").read_text().count("\n") == 4  # header + 3 epochs
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & stat.S_IRGRP, f"published records must be readable by others, mode {oct(mode)}"


def test_store_is_append_only(tmp_path):
    r = record()
    results.save(r, tmp_path)
    before = (tmp_path / f"{r['run_id']}.json").read_text()
    with pytest.raises(FileExistsError):
        results.save(dict(r, status="failed"), tmp_path)
    assert (tmp_path / f"{r['run_id']}.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_keys_say_what_changed():
    base = record()
    k = results.record_key(base)
    assert results.record_key(record(repeat=5))["config"] == k["config"], "the repeat is not part of the config"
    assert results.record_key(record(samples=4096))["config"] != k["config"]
    assert results.record_key(record(version="2.14.0"))["env"] != k["env"]
    assert results.record_key(record(env={**ENV, "git": {"commit": "f" * 40, "dirty": True}}))["commit"] == \
        "ffffffffffff+dirty"
    assert results.record_key(record(env={**ENV, "machine_id": "", "hostname": "other"}))["machine"] == "other"


def test_load_reads_nested_folders_and_ignores_what_is_not_a_record(tmp_path):
    results.save(record(seconds=(2, 1, 1)), tmp_path / "machine-a")
    results.save(record(framework="jax", seconds=(5, 2, 2, 2)), tmp_path / "machine-a")
    results.save(record(status="failed"), tmp_path / "machine-b")
    (tmp_path / "harness_overhead-cnn.json").write_text(json.dumps({"ratio": 1.01}))  # a bench script's output
    (tmp_path / "machine-a" / ".x.json.1234.tmp").write_text('{"run_id": ')  # a write killed midway
    (tmp_path / "broken.json").write_text('{"run_id": "x", "impl"')
    frame = results.load(tmp_path)
    assert len(frame) == 7  # epoch rows; the failed run has none
    assert frame["warmup"].sum() == 2
    assert {"machine", "env", "commit", "config", "suite", "seconds", "examples_per_s"} <= set(frame)
    index = results.index(tmp_path)
    assert sorted(index["status"]) == ["failed", "ok", "ok"]
    assert all(os.path.exists(p) for p in index["path"])


def test_load_filters_by_key(tmp_path):
    other = {**ENV, "machine_id": "0000aaaa1111", "git": {"commit": "abc" + "0" * 37, "dirty": False}}
    results.save(record(), tmp_path)
    results.save(record(env=other, plan={"suite": "python-cnn", "config": "x", "repeat": 0}), tmp_path)
    assert len(results.index(tmp_path, machine="0000aaaa1111")) == 1
    assert len(results.index(tmp_path, commit="abc")) == 1
    assert len(results.index(tmp_path, commit="0123")) == 1
    assert len(results.index(tmp_path, suite="python-cnn")) == 1
    with pytest.raises(TypeError, match="unknown key"):
        results.read_records([tmp_path], colour="red")
    with pytest.raises(FileNotFoundError):
        results.load(tmp_path / "nowhere")


def _brute_force_ci(n: int, level: float = 0.95):
    """The widest-j (narrowest) symmetric order-statistic interval by direct binomial sums."""
    best = None
    for j in range(1, n // 2 + 1):
        inside = sum(math.comb(n, i) for i in range(j, n - j + 1)) / 2 ** n  # P(j <= B <= n-j)
        if inside >= level:
            best = (j, inside)
    return best


@pytest.mark.parametrize("n", [1, 3, 5, 6, 7, 10, 20, 31, 100])
def test_median_interval_is_the_order_statistic_interval(n):
    x = np.random.default_rng(n).normal(10, 1, n)
    low, high, coverage = stats.median_ci(x)
    expected = _brute_force_ci(n)
    if expected is None:
        assert math.isnan(low) and math.isnan(high) and n < 6
        return
    j, inside = expected
    s = np.sort(x)
    assert (low, high) == (s[j - 1], s[n - j]) and coverage == pytest.approx(inside)
    assert low <= np.median(x) <= high and coverage >= 0.95


def test_median_interval_covers_the_true_median_about_95_percent():
    rng = np.random.default_rng(0)
    hits = sum(lo <= 0 <= hi for lo, hi, _ in (stats.median_ci(rng.standard_cauchy(25)) for _ in range(1000)))
    assert 0.94 <= hits / 1000 <= 0.975  # exact coverage for n=25 is 95.7 %, whatever the distribution


def test_median_interval_is_scipys_quantile_test_interval():
    from scipy.stats import quantile_test

    x = np.random.default_rng(1).lognormal(0, 0.5, 17)
    ci = quantile_test(x, q=1.0, p=0.5).confidence_interval(0.95)
    assert stats.median_ci(x)[:2] == (ci.low, ci.high)


def test_ratio_interval_covers_the_true_ratio_about_95_percent():
    """median(new) / median(base) for two samples whose true medians differ by 1.3x."""
    rng = np.random.default_rng(2)
    trials, hits = 300, 0
    for _ in range(trials):
        base = np.exp(rng.normal(0, 0.1, 20))  # true median 1
        new = 1.3 * np.exp(rng.normal(0, 0.1, 20))  # true median 1.3
        low, high = stats.ratio_ci(new, base)
        assert low <= np.median(new) / np.median(base) <= high
        hits += low <= 1.3 <= high
    assert 0.88 <= hits / trials <= 0.995  # a percentile bootstrap of medians runs a little short at n = 20


def test_ratio_interval_needs_six_samples_a_side():
    assert all(math.isnan(v) for v in stats.ratio_ci([1.0] * 5, [1.0] * 10))
    assert stats.ratio_ci([2.0] * 6, [1.0] * 6) == (2.0, 2.0)


def test_summarize_separates_warmup_pools_steady_epochs_and_checks_accuracy():
    recs = [record(seconds=(9.0, 1.0, 1.2, 1.1), repeat=0, accuracy=0.80),
            record(seconds=(8.0, 1.3, 1.0, 1.4), repeat=1, accuracy=0.82),
            record(seconds=(7.0, 5.0, 5.0), repeat=2, status="failed"),
            record(framework="mxnet", seconds=(3.0, 2.0, 2.0, 2.0), accuracy=0.60, version="1.9.1"),
            record(framework="jax", seconds=(4.0, 3.0, 3.0, 3.0), accuracy=0.81, version="0.10")]
    summary = stats.summarize(results.to_frame(recs)).set_index("framework")
    torch = summary.loc["pytorch"]
    steady = [1.0, 1.2, 1.1, 1.3, 1.0, 1.4]
    assert torch["runs"] == 2 and torch["n"] == 6
    assert torch["median_s"] == pytest.approx(np.median(steady))
    q1, q3 = np.percentile(steady, [25, 75])
    assert torch["iqr_s"] == pytest.approx(q3 - q1)
    assert (torch["ci_low_s"], torch["ci_high_s"]) == (1.0, 1.4) and torch["ci_level"] == pytest.approx(1 - 2 / 64)
    assert torch["first_epoch_s"] == pytest.approx(8.5)
    assert torch["startup_s"] == pytest.approx(2.0)  # process start + import + build
    assert torch["median_eps"] == pytest.approx(np.median([2048 / s for s in steady]))
    assert pd_isnan(summary.loc["pytorch", "backend"])
    assert summary.loc["pytorch", "accuracy_parity"] and summary.loc["jax", "accuracy_parity"]
    assert not summary.loc["mxnet", "accuracy_parity"], "20 points below the others must be flagged"


def pd_isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def test_terminal_summary_names_units_and_the_reports_start_up():
    """The run/suite table: rich, units in the headers, start-up = spawn + import + build (as the report)."""
    from harness import summary

    recs = [record(seconds=(9.0, 1.0, 1.2, 1.1), repeat=i) for i in range(2)]
    recs += [record(framework="jax", version="0.10", model="rnn", seconds=(4.0, 0.5, 0.5, 0.5), repeat=i)
             for i in range(2)]
    recs.append(record(framework="mxnet", status="failed"))
    text = summary.text(recs)
    header = text.splitlines()[0]
    for column in ("implementation", "s/epoch (95 % CI)", "images/s", "tokens/s", "× PyTorch (95 % CI)",
                   "first epoch s", "start-up s", "test acc", "n epochs/runs"):
        assert column in header, column
    torch = next(line for line in text.splitlines() if line.startswith("PyTorch 2.13.0"))
    assert "1.10 (1.00–1.20)" in torch and " 2.00 " in torch and "6/2" in torch  # start-up 0.1 + 1.5 + 0.4
    jax = next(line for line in text.splitlines() if line.startswith("JAX (Flax) 0.10"))
    assert f"{2048 // 64 * 64 / 0.5 * 150:,.0f}" in jax  # tokens/s = sequences/s x 150
    assert "failed python/mxnet/cnn r0: RuntimeError: boom" in text and "error" not in header


# --------------------------------------------------------------------------- bad files and atomic writes
def plant_bad_files(folder):
    """Both kinds of bad file: records that parse with wrong types, and JSON that does not parse."""
    folder.mkdir(parents=True, exist_ok=True)
    bad = {"wrong-impl": dict(record(), impl="oops"),
           "wrong-seconds": dict(record(), epochs=[{"epoch": 0, "seconds": "fast"}]),
           "wrong-status": dict(record(), status="done")}
    for name, r in bad.items():
        (folder / f"{name}.json").write_text(json.dumps(r))
    good = json.dumps(record())
    (folder / "truncated.json").write_text(good[: len(good) // 2])
    (folder / "garbage.json").write_bytes(b"\x00\xff garbage")
    (folder / "bench-output.json").write_text(json.dumps({"ratio": 1.01}))  # not a record: no warning
    return {"wrong-impl": "impl is str \"oops\", not a dict", "wrong-seconds": "epochs[0].seconds is str",
            "wrong-status": "status is 'done'; choices: ok, failed, interrupted",
            "truncated": "not valid JSON", "garbage": "not valid JSON"}


def warnings_in(err: str) -> dict:
    out = {}
    for line in err.splitlines():
        assert line.startswith("warning: skipped "), line
        path, why = line.removeprefix("warning: skipped ").split(": ", 1)
        out[os.path.basename(path).removesuffix(".json")] = why
    return out


def test_every_reader_skips_a_bad_file_with_one_line_naming_it(tmp_path, capsys):
    results.save(record(seconds=(2, 1, 1)), tmp_path)
    results.save(record(framework="jax", seconds=(5, 2, 2, 2)), tmp_path)
    expected = plant_bad_files(tmp_path / "sub")
    for read, rows in ((lambda: results.load(tmp_path), 7), (lambda: results.index(tmp_path), 2),
                       (lambda: results.read_records([tmp_path]), 2)):
        capsys.readouterr()
        assert len(read()) == rows
        seen = warnings_in(capsys.readouterr().err)
        assert set(seen) == set(expected)
        for name, why in expected.items():
            assert why in seen[name], (name, seen[name])
    records, skipped = results.scan([tmp_path])
    assert len(records) == 2 and len(skipped) == 5


def test_report_and_compare_go_on_past_bad_files_and_say_so(tmp_path, capsys):
    from harness.cli import main

    base, new = tmp_path / "base", tmp_path / "new"
    for i in range(3):
        results.save(record(seconds=(3, 1.0, 1.01, 0.99), repeat=i), base)
        results.save(record(seconds=(3, 1.0, 1.01, 0.99), repeat=i), new)
    expected = plant_bad_files(new)
    capsys.readouterr()
    assert main(["report", str(new), "--out", str(tmp_path / "report"), "--quiet"]) == 0
    assert set(warnings_in("\n".join(line for line in capsys.readouterr().err.splitlines()
                                      if line.startswith("warning:")))) == set(expected)
    assert main(["compare", str(base), str(new), "--format", "json"]) == 0
    err = capsys.readouterr().err
    assert set(warnings_in("\n".join(line for line in err.splitlines() if line.startswith("warning:")))) == set(expected)


def test_record_problem_names_the_field():
    good = record()
    assert results.record_problem(good) is None
    cases = {"impl is str": dict(good, impl="oops"), "config.batch_size is str": dict(good, config={**good["config"], "batch_size": "64"}),
             "run_id is null": dict(good, run_id=None), "environment.gpus[0] has no name":
             dict(good, environment={**good["environment"], "gpus": [{"memory_mib": 1}]}),
             "metrics.test_accuracy is str": dict(good, metrics={"test_accuracy": "high"}),
             "a record is a JSON object": [good]}
    for want, bad in cases.items():
        assert want in (results.record_problem(bad) or ""), (want, results.record_problem(bad))


def test_a_failed_link_leaves_no_partial_record(tmp_path, monkeypatch):
    """Fault injection in the process: the record's link into place fails after its temporary
    file was written; nothing of the run is left visible (not its record, not its epoch table)."""
    real_link = os.link

    def link(src, dst, *a, **k):
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(os, "link", link)
    r = record()
    with pytest.raises(OSError, match="No space left"):
        results.save(r, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "link", real_link)
    results.save(r, tmp_path)  # the same run saved again: whole
    assert results.read_records([tmp_path])[0]["run_id"] == r["run_id"]
