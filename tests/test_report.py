"""`report`: the Markdown table (numbers, spread, hardware) and the HTML page, rendered in headless Chromium."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from fake_records import ENV, record
from harness import results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium): "
    "the report page's rendering in a browser is not checked")

GPU_ENV = {**ENV, "machine_id": "9999gpu00000", "hostname": "gpubox", "cpu": "Test Xeon", "cores": 64}
CNN_TIMES = {"pytorch": 1.0, "tensorflow": 1.2, "jax": 0.9}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A CPU machine: three frameworks x cnn/rnn, R Keras next to Python Keras; a GPU machine at 1/2/4 GPUs."""
    root = tmp_path_factory.mktemp("report-store")
    rng = np.random.default_rng(0)
    for repeat in range(3):
        for fw, t in CNN_TIMES.items():
            for model, scale in (("cnn", 1.0), ("rnn", 0.5)):
                steady = tuple(t * scale * (1 + 0.02 * rng.standard_normal(3)))
                results.save(record(framework=fw, model=model, seconds=(5 * t,) + steady, repeat=repeat,
                                    accuracy=0.80 if fw != "tensorflow" else 0.60), root / "cpu")
        for lang, t in (("python", 2.0), ("r", 2.1)):
            results.save(record(lang=lang, framework="keras", backend="jax", version="3.15.0",
                                seconds=(9, t, t * 1.01, t * 0.99), repeat=repeat), root / "cpu")
        for gpus in (1, 2, 4):
            t = 1.0 / gpus * 1.1 ** (gpus > 1)
            results.save(record(framework="pytorch", model="resnet50", device="cuda", gpus=gpus, env=GPU_ENV,
                                gpu_names=["NVIDIA H100 80GB HBM3"] * 4, seconds=(3, t, t, t), repeat=repeat),
                         root / "gpu")
    results.save(record(framework="jax", status="failed"), root / "cpu")  # failed runs are not in the numbers
    return root


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    from harness.reporting import build

    out = tmp_path_factory.mktemp("report")
    md, sections = build([store], out)
    return out, md, sections


def test_markdown_table_has_hardware_interval_n_and_ratio(report, store):
    from scipy.stats import quantile_test

    out, md, sections = report
    assert (out / "table.md").read_text() == md
    cpu = md.split("### ")[1]
    assert cpu.startswith("CPU, fp32: Test CPU 9000 (8 cores), 64 GiB RAM, no GPU · commit 0123456789ab")
    header = next(line for line in cpu.splitlines() if line.startswith("| Framework"))
    assert header == ("| Framework | cnn s/epoch (95 % CI where n ≥ 6), n | cnn images/s | cnn × PyTorch (95 % CI) "
                      "| rnn s/epoch (95 % CI where n ≥ 6), n | rnn tokens/s | rnn × PyTorch (95 % CI) |")
    frame = results.load(store / "cpu")

    def steady(fw):
        f = frame[(frame.framework == fw) & (frame.model == "cnn") & ~frame.warmup & (frame.status == "ok")]
        return f["seconds"].to_numpy()

    torch = steady("pytorch")
    row = next(line for line in cpu.splitlines() if line.startswith("| PyTorch 2.13.0 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    m = re.fullmatch(r"([\d.]+) \(([\d.]+)–([\d.]+)\), n (\d+)/(\d+)", cells[1])
    assert m, cells
    ci = quantile_test(torch, q=1, p=0.5).confidence_interval(0.95)
    assert float(m[1]) == pytest.approx(np.median(torch), rel=0.01)
    assert (float(m[2]), float(m[3])) == (pytest.approx(ci.low, rel=0.01), pytest.approx(ci.high, rel=0.01))
    assert (int(m[4]), int(m[5])) == (9, 3)  # 3 steady epochs x 3 runs
    assert cells[2] == f"{2048 // 64 * 64 / np.median(torch):,.0f}" and cells[3] == "1.00×"
    tf = next(line for line in cpu.splitlines() if line.startswith("| TensorFlow"))
    ratio = re.fullmatch(r"([\d.]+)× \(([\d.]+)–([\d.]+)\)", [c.strip() for c in tf.strip("|").split("|")][3])
    assert ratio and float(ratio[1]) == pytest.approx(np.median(torch) / np.median(steady("tensorflow")), abs=0.01)
    assert float(ratio[2]) <= float(ratio[1]) <= float(ratio[3]) < 1  # 1.2x slower, and sure of it
    assert "| Keras 3.15.0 (JAX) |" in cpu and "| R Keras 3.15.0 (JAX) |" in cpu
    jax = next(line for line in cpu.splitlines() if line.startswith("| JAX (Flax) 2.13.0 |"))
    assert jax.split("|")[2].strip().endswith("n 9/3, 1 failed")  # a failed run is shown, not hidden
    # details: interval with coverage, and the accuracy parity flag on the row 20 points off
    detail = next(line for line in cpu.splitlines() if line.startswith("| PyTorch 2.13.0 | cnn |"))
    assert "load average (1 min) before each run: median 0.5, max 0.5 on 8 cores" in cpu
    assert "(96.1%)" in detail  # n = 9: (x_(2), x_(8)), coverage 1 - 2 (1 + 9) / 512
    assert re.search(r"\| TensorFlow [^|]*\| cnn \|.*0\.600 ⚠ \|", cpu)
    assert "Commands: `python -m harness (test)` (" in cpu and "Python: 3.11.7" in cpu
    gpu = md.split("### ")[2:]
    assert [s.split(":")[0] for s in gpu] == ["CUDA, 1 GPU, fp32", "CUDA, 2 GPUs, fp32", "CUDA, 4 GPUs, fp32"]
    assert all(": Test Xeon (64 cores), 64 GiB RAM, 4× NVIDIA H100 80GB HBM3 · commit" in s for s in gpu)
    assert all("4× NVIDIA H100 80GB HBM3" in s and "driver 550.54" in s for s in gpu)  # the full environment


def test_scaling_efficiency_against_one_device(report):
    out, md, sections = report
    gpu = {s.split(":")[0]: s for s in md.split("### ")[2:]}
    # the fake 2- and 4-GPU epochs take 1.1 / N of the one-GPU epoch: 1 / 1.1 = 91 % efficiency
    for n in (2, 4):
        detail = next(line for line in gpu[f"CUDA, {n} GPUs, fp32"].splitlines() if line.startswith("| PyTorch 2.13.0 | resnet50 |"))
        assert f"(91% of {n}× one device)" in detail, detail
    assert "one device)" not in gpu["CUDA, 1 GPU, fp32"]


def test_multi_node_runs_get_their_own_section_and_scale_against_one_device(tmp_path):
    """2 nodes x 1 GPU is 2 replicas: its own section, and its efficiency is against 1 device, not
    against itself (both have gpus == 1)."""
    from harness.reporting import build

    for nodes in (1, 2):
        t = 1.0 / nodes * 1.1 ** (nodes > 1)
        results.save(record(framework="jax", model="resnet50", device="cuda", gpus=1, nodes=nodes, env=GPU_ENV,
                            gpu_names=["NVIDIA H100 80GB HBM3"], seconds=(3, t, t, t)), tmp_path / "store")
    md, _ = build([tmp_path / "store"], tmp_path / "out")
    gpu = {s.split(":")[0]: s for s in md.split("### ")[1:]}
    assert sorted(gpu) == ["CUDA, 1 GPU, fp32", "CUDA, 2 nodes, 1 GPU each, fp32"]
    detail = next(line for line in gpu["CUDA, 2 nodes, 1 GPU each, fp32"].splitlines()
                  if line.startswith("| JAX") and "| resnet50 |" in line)
    assert "(91% of 2× one device)" in detail, detail
    assert "one device)" not in gpu["CUDA, 1 GPU, fp32"]


def test_charts_are_written_for_bars_scaling_and_languages(report):
    out, md, sections = report
    names = sorted(p.name for p in out.glob("*.png"))
    assert any(n.startswith("bars-test-cpu-9000") for n in names)
    assert [n for n in names if n.startswith("scaling-")] == ["scaling-nvidia-h100-80gb-hbm3-cuda-fp32.png"]
    assert [n for n in names if n.startswith("languages-")] == ["languages-test-cpu-9000-cpu-fp32-x1.png"]
    assert len(names) == 1 + 3 + 1 + 1  # bars for 4 sections, one scaling, one languages chart
    for n in names:
        assert (out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](bars-test-cpu-9000-cpu-fp32-x1.png)" in md


# Driven from outside, judged by the page's own script: wait until it has drawn every chart, count the
# drawn bars and table rows, pick "TensorFlow" in the page's framework filter, count again.
PROBE = """<script>
function count() {
  const rows = [...document.querySelectorAll("#rows tbody tr")].filter(tr => !tr.hidden).length;
  const plots = [...document.querySelectorAll(".js-plotly-plot")];
  const drawn = plots.filter(p => p.querySelector("svg.main-svg") && p.getBoundingClientRect().height > 100).length;
  const bars = document.querySelectorAll(".barlayer .point path").length;
  const visible = plots.filter(p => !p.closest("figure").hidden)
    .reduce((n, p) => n + p.data.filter(t => t.visible !== false).length, 0);
  return `rows=${rows} plots=${plots.length} drawn=${drawn} bars=${bars} traces=${visible}`;
}
function probe() {
  if (!document.body.dataset.rendered) { setTimeout(probe, 50); return; }
  const before = count();
  const select = document.getElementById("filter-framework");
  select.value = "TensorFlow";
  select.dispatchEvent(new Event("change"));
  setTimeout(() => document.body.setAttribute("data-probe", `${before} | ${count()}`), 200);
}
window.addEventListener("load", probe);
</script></body>"""


def rendered(page, tmp_path) -> tuple[dict, dict]:
    """The probe's counts as headless Chromium ran the page: (before, after the filter)."""
    probe = page.with_name("_probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=20000", "--dump-dom",
           probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    probe.unlink()
    m = re.search(r'data-probe="([^"]*)"', proc.stdout)
    assert m, f"chromium gave no probe result (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return tuple({k: int(v) for k, v in (kv.split("=") for kv in half.split())} for half in m[1].split(" | "))


@needs_chromium
def test_page_draws_its_charts_and_filters_in_headless_chromium(report, tmp_path):
    out, md, sections = report
    page = out / "index.html"
    before, after = rendered(page, tmp_path)
    rows = sum(len(s.summary) for s in sections)
    bar_charts = sum(len(s.columns) for s in sections)
    assert before["rows"] == rows and before["plots"] >= bar_charts and before["drawn"] == before["plots"]
    assert before["bars"] >= rows  # one bar per row, drawn as an SVG path
    tensorflow = sum((s.summary["framework"] == "tensorflow").sum() for s in sections)
    assert after["rows"] == tensorflow == 2  # cnn and rnn on the CPU machine
    assert after["traces"] == 2 and after["bars"] < before["bars"]
    # the probe can fail: a page whose script breaks draws nothing and never says it is done
    broken = out / "broken.html"
    broken.write_text(page.read_text().replace("Plotly.newPlot(", "Plotly.nothing("))
    with pytest.raises(AssertionError, match="no probe result"):
        rendered(broken, tmp_path)
    broken.unlink()


def test_page_is_self_contained(report):
    out, md, sections = report
    text = (out / "index.html").read_text()
    assert "<script src" not in text and "<link" not in text and 'src="http' not in text
    assert "Plotly" in text and text.count('id="report-data"') == 1
    assert 'src="data:image/png;base64,' in text  # the scaling and languages PNGs are inside the page
    assert "python -m harness (test)" in text  # the commands, in the sections and the rows' hover


def test_report_command_writes_the_page_and_prints_the_table(store, tmp_path, capsys):
    from harness.cli import main

    assert main(["report", str(store / "cpu"), "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr()
    assert "| Framework | cnn s/epoch" in printed.out and "index.html" in printed.err
    assert {"index.html", "table.md"} <= {p.name for p in (tmp_path / "r").iterdir()}
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no run records" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_sections_never_pool_two_commits_or_two_environments(tmp_path):
    """The same machine and setup at two commits, and at one commit under two Pythons: four sections,
    each titled so that none reads like another; the history follows the rows across the commits."""
    from harness.reporting import build

    for commit, t, version in (("aaaa", 1.0, "2.12.0"), ("bbbb", 0.8, "2.13.0")):
        for python in ("3.11.7", "3.12.1"):
            env = {**ENV, "python": python, "git": {"commit": commit + "0" * 36, "dirty": False}}
            for repeat in range(2):
                results.save(record(env=env, seconds=(2, t, t, t), version=version, repeat=repeat,
                                    started=f"2026-01-0{1 + (commit == 'bbbb')}T00:00:00+00:00"), tmp_path / "s")
    md, sections = build([tmp_path / "s"], tmp_path / "out")
    titles = [s.title for s in sections]
    assert len(titles) == 4 and len(set(titles)) == 4
    assert sorted(s.key["commit_key"] for s in sections) == ["aaaa00000000"] * 2 + ["bbbb00000000"] * 2
    assert titles[0].endswith("commit bbbb00000000 · machine feedface, environment " + sections[0].key["sysenv"])
    assert all(len(s.summary) == 1 and s.summary["n"].iloc[0] == 6 for s in sections)  # 2 runs, never 4 or 8
    page = (tmp_path / "out" / "index.html").read_text()
    assert "History: cnn (synthetic, 2,048 examples, batch 64)" in page and "2.12.0" in page and "2.13.0" in page


def test_loaded_rows_are_flagged(tmp_path):
    from harness.reporting import build

    for repeat in range(2):
        busy = record(framework="jax", version="0.10", repeat=repeat)
        busy["load_average"] = {"before": [12.0, 9.0, 8.0]}  # 12 on 8 cores
        results.save(busy, tmp_path / "s")
        results.save(record(repeat=repeat), tmp_path / "s")
    md, sections = build([tmp_path / "s"], tmp_path / "out")
    assert "| JAX (Flax) 0.10 | 1.00 (1.00–1.00), n 6/2 ⚑ |" in md and "| PyTorch 2.13.0 | 1.00 (1.00–1.00), n 6/2 |" in md
    assert "⚑ 1 row(s) measured above 8: other work competed for the cores" in md
    page = (tmp_path / "out" / "index.html").read_text()
    assert page.count('class="loaded"') == 1 and "JAX (Flax) 0.10 ⚑" in page


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_summary_exports(report, store, tmp_path, fmt, capsys):
    import pandas as pd

    from harness.cli import main

    assert main(["report", str(store), "--out", str(tmp_path), "--format", fmt]) == 0
    printed = capsys.readouterr()
    path = tmp_path / f"summary.{fmt}"
    frame = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[fmt](path)
    if fmt != "parquet":
        assert printed.out == path.read_text()
    assert not (tmp_path / "index.html").exists()
    out, md, sections = report
    assert len(frame) == sum(len(s.summary) for s in sections)  # one row per implementation x workload x section
    torch = frame[(frame.framework == "pytorch") & (frame.model == "cnn")].iloc[0]
    ref = sections[0].summary.set_index(["framework", "model"]).loc[("pytorch", "cnn")]
    assert torch["median_s_per_epoch"] == pytest.approx(ref["median_s"])
    assert (torch["ci_low_s_per_epoch"], torch["ci_high_s_per_epoch"]) == (
        pytest.approx(ref["ci_low_s"]), pytest.approx(ref["ci_high_s"]))
    assert torch["n"] == 9 and torch["runs"] == 3 and torch["x_pytorch"] == 1.0
    assert torch["throughput_unit"] == "images/s" and torch["throughput"] == pytest.approx(ref["median_eps"])
    tf = frame[(frame.framework == "tensorflow") & (frame.model == "rnn")].iloc[0]
    assert tf["throughput_unit"] == "tokens/s" and tf["x_pytorch_ci_low"] < tf["x_pytorch"] < tf["x_pytorch_ci_high"]
    assert set(frame["commit"]) == {"0123456789ab"} and "section" in frame and "loaded" in frame


def test_mlflow_logs_every_run_once_to_a_local_file_store(store, tmp_path, capsys):
    pytest.importorskip("mlflow")
    from harness.cli import main

    uri = tmp_path / "mlruns"
    assert main(["report", str(store / "cpu"), "--out", str(tmp_path / "r"), "--format", "csv", "--quiet",
                 "--mlflow", str(uri)]) == 0
    total = len(results.read_records([store / "cpu"]))
    assert f"mlflow: {total} run(s) logged to {uri}" in capsys.readouterr().err
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri.as_uri())
    experiment = client.get_experiment_by_name("dl-rosetta")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) == total
    run = next(r for r in runs if r.data.params["framework"] == "pytorch" and r.data.params["model"] == "cnn")
    assert run.data.params["epochs"] == "4" and run.data.params["version.pytorch"] == "2.13.0"
    assert run.data.tags["commit"] == "0123456789ab" and run.data.tags["machine"] == "feedfacecafe"
    assert run.data.metrics["first_epoch_s"] == pytest.approx(5.0)
    history = client.get_metric_history(run.info.run_id, "epoch_seconds")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"environment.json", "command.txt"} <= artifacts
    failed = [r for r in runs if r.data.tags["dl_rosetta.status"] == "failed"]
    assert len(failed) == 1 and failed[0].info.status == "FAILED"
    # a second report logs nothing new
    assert main(["report", str(store / "cpu"), "--out", str(tmp_path / "r"), "--format", "csv", "--quiet",
                 "--mlflow", str(uri)]) == 0
    assert f"mlflow: 0 run(s) logged to {uri} (experiment dl-rosetta), {total} already there" in capsys.readouterr().err


def test_markdown_escapes_text_from_records(tmp_path):
    """Text copied from records (a CPU's name, a version) cannot break table.md's rows or add markup;
    the HTML page escapes the same text its own way."""
    from harness.reporting import build

    env = {**ENV, "cpu": "Weird | CPU <b>*9000*</b> [x](y) `z` _w_"}
    for repeat in range(2):
        results.save(record(env=env, version="2.13.0|rc1*", seconds=(3, 1.0, 1.0), repeat=repeat), tmp_path / "s")
    md, _ = build([tmp_path / "s"], tmp_path / "report")
    assert "Weird \\| CPU \\<b\\>\\*9000\\*\\</b\\> \\[x\\](y) \\`z\\` \\_w\\_" in md
    assert "<b>" not in md and "| CPU" not in md.replace("\\|", "")
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    widths = {len(re.findall(r"(?<!\\)\|", line)) for line in rows[:3]}
    assert len(widths) == 1, rows[:3]  # header, separator and rows keep their columns
    assert "2.13.0\\|rc1\\*" in md
