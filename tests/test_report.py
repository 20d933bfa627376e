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
    from harness.commands.report import build

    out = tmp_path_factory.mktemp("report")
    md, sections = build([store], out)
    return out, md, sections


def test_markdown_table_has_hardware_spread_and_every_cell(report, store):
    out, md, sections = report
    assert (out / "table.md").read_text() == md
    cpu = md.split("### ")[1]
    assert cpu.startswith("CPU, fp32: Test CPU 9000 (8 cores), 64 GiB RAM, no GPU")
    header = next(line for line in cpu.splitlines() if line.startswith("| Framework"))
    assert header == "| Framework | cnn | rnn |"
    frame = results.load(store / "cpu")
    steady = frame[(frame.framework == "pytorch") & (frame.model == "cnn") & ~frame.warmup & (frame.status == "ok")]
    q1, med, q3 = np.percentile(steady["seconds"], [25, 50, 75])
    row = next(line for line in cpu.splitlines() if line.startswith("| PyTorch 2.13.0 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    m = re.fullmatch(r"([\d.]+) ± ([\d.]+) \((\d+)/(\d+)\)", cells[1])
    assert m, cells
    assert float(m[1]) == pytest.approx(med, rel=0.01)
    assert float(m[2]) == pytest.approx((q3 - q1) / 2, rel=0.05, abs=1e-3)
    assert (int(m[3]), int(m[4])) == (9, 3)  # 3 steady epochs x 3 runs
    assert "| Keras 3.15.0 (JAX) |" in cpu and "| R Keras 3.15.0 (JAX) |" in cpu
    jax = next(line for line in cpu.splitlines() if line.startswith("| JAX (Flax) 2.13.0 |"))
    assert jax.split("|")[2].strip().endswith("(9/3), 1 failed")  # a failed run is shown, not hidden
    # details: interval with coverage, and the accuracy parity flag on the row 20 points off
    detail = next(line for line in cpu.splitlines() if line.startswith("| PyTorch 2.13.0 | cnn |"))
    assert "load average (1 min) before each run: median 0.5, max 0.5 on 8 cores" in cpu
    assert "(96.1%)" in detail  # n = 9: (x_(2), x_(8)), coverage 1 - 2 (1 + 9) / 512
    assert re.search(r"\| TensorFlow [^|]*\| cnn \|.*0\.600 ⚠ \|", cpu)
    gpu = md.split("### ")[2:]
    assert [s.split(":")[0] for s in gpu] == ["CUDA, 1 GPU, fp32", "CUDA, 2 GPUs, fp32", "CUDA, 4 GPUs, fp32"]
    assert all(": Test Xeon (64 cores), 64 GiB RAM, 4× NVIDIA H100 80GB HBM3\n" in s for s in gpu)


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
    from harness.commands.report import build

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


PROBE = """<script>window.addEventListener("load", () => {
  const r = [...document.images].map(
    i => `${i.getAttribute("src")}=${i.complete}:${i.naturalWidth}x${i.naturalHeight}`);
  document.body.setAttribute("data-probe", r.join(" "));
});</script></body>"""


def rendered_images(page, tmp_path) -> dict:
    """{src: (width, height)} of every <img> as headless Chromium loaded the page."""
    probe = page.with_name("_probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom",
           probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    probe.unlink()
    m = re.search(r'data-probe="([^"]*)"', proc.stdout)
    assert m, f"chromium gave no probe result (exit {proc.returncode}): {proc.stderr[-2000:]}"
    images = {}
    for item in m[1].split():
        src, state = item.rsplit("=", 1)
        complete, size = state.split(":")
        w, h = map(int, size.split("x"))
        images[src] = (w, h) if complete == "true" else (0, 0)
    return images


@needs_chromium
def test_page_renders_in_headless_chromium_with_every_image(report, tmp_path):
    out, md, sections = report
    page = out / "index.html"
    images = rendered_images(page, tmp_path)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert sorted(images) == pngs
    for src, (w, h) in images.items():
        assert w > 100 and h > 100, f"{src} did not render: {w}x{h}"
    # the probe can fail: a page whose image is missing shows it as unrendered
    broken = out / "broken.html"
    broken.write_text(page.read_text().replace(pngs[0], "missing.png"))
    assert rendered_images(broken, tmp_path)["missing.png"] == (0, 0)
    broken.unlink()


def test_report_command_writes_the_page_and_prints_the_table(store, tmp_path, capsys):
    from harness.cli import main

    assert main(["report", str(store / "cpu"), "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr()
    assert "| Framework | cnn | rnn |" in printed.out and "index.html" in printed.err
    assert {"index.html", "table.md"} <= {p.name for p in (tmp_path / "r").iterdir()}
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no run records" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_markdown_escapes_text_from_records(tmp_path):
    """Text copied from records (a CPU's name, a version) cannot break table.md's rows or add markup;
    the HTML page escapes the same text its own way."""
    from harness.commands.report import build

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
