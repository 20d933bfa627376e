"""bench/readme_tables.py: the README's CPU block from a store, with intervals, n, x PyTorch and the load;
it refuses a store with too few repeats, no PyTorch row, or rows measured on a loaded machine."""
from __future__ import annotations

import importlib.util
import re

import pytest

from conftest import REPO
from fake_records import ENV, record
from harness import results
from harness.errors import UsageError

spec = importlib.util.spec_from_file_location("readme_tables", REPO / "bench" / "readme_tables.py")
readme_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_tables)

README = """# Title

Some text.

<!-- readme-tables: begin: old -->
| old | table |
<!-- readme-tables: end -->

More text.
"""


def store(root, repeats=5, loaded=(), frameworks=("pytorch", "tensorflow"), dirty=False):
    env = {**ENV, "git": {**ENV["git"], "dirty": dirty}}
    for repeat in range(repeats):
        for fw, t in zip(frameworks, (1.0, 0.8)):
            for model in ("cnn", "rnn"):
                r = record(framework=fw, model=model, seconds=(3, t * (1 + 0.01 * repeat), t * (1 - 0.01 * repeat)),
                           repeat=repeat, version="2.13.0" if fw == "pytorch" else "2.21.0", env=env)
                if fw in loaded:
                    r["load_average"] = {"before": [9.0, 9.0, 9.0]}  # 9 on 8 cores
                results.save(r, root)
    return root


def test_the_block_carries_intervals_n_ratio_and_load(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    text = readme_tables.regenerate(store(tmp_path / "s"), readme)
    assert text.startswith("# Title\n\nSome text.\n\n") and text.endswith("\n\nMore text.\n")
    block = text.split("<!-- readme-tables: begin")[1].split("<!-- readme-tables: end -->")[0]
    assert "| old |" not in block
    assert "5 interleaved runs per row" in block and "load average (1 min) before each run: median 0.5" in block
    torch = next(line for line in block.splitlines() if line.startswith("| PyTorch 2.13.0 |"))
    assert re.search(r"\| 1\.00 \(0\.9\d+–1\.0\d+\), n 10/5 \|", torch), torch
    tf = next(line for line in block.splitlines() if line.startswith("| TensorFlow 2.21.0 |"))
    assert re.search(r"\| 1\.2\d× \(1\.2\d–1\.2\d\) \|", tf), tf  # PyTorch's 1.0 s over TensorFlow's 0.8 s
    png = re.search(r"!\[[^]]*\]\(([^)]+)\)", block)[1]
    assert (tmp_path / png).exists() and png.startswith("s/report/bars-")


@pytest.mark.parametrize("kwargs, message", [
    ({"repeats": 4}, "row(s) with fewer than 5 runs"),
    ({"frameworks": ("tensorflow", "jax")}, "no PyTorch row"),
    ({"loaded": ("tensorflow",)}, "measured while the load exceeded the cores"),
    ({"dirty": True}, "measured from a tree with uncommitted changes"),
])
def test_the_block_is_refused_for_a_store_that_cannot_be_a_headline(tmp_path, kwargs, message):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    with pytest.raises(UsageError, match=re.escape(message)):
        readme_tables.regenerate(store(tmp_path / "s", **kwargs), readme)
    assert readme.read_text() == README


def test_the_transformer_block_has_tokens_mfu_first_epoch_and_bits_per_byte(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README.replace("readme-tables", "transformer-table"))
    root = tmp_path / "s"
    for repeat in range(2):
        for fw, t, bpb in (("pytorch", 10.0, 7.5), ("jax", 12.5, 7.6)):
            r = record(framework=fw, model="transformer", seconds=(30, t, t * 1.01), repeat=repeat, samples=64)
            r["metrics"]["test_bits_per_byte"] = bpb
            results.save(r, root)
    text = readme_tables.regenerate(root, readme, min_repeats=2, name="transformer-table")
    block = text.split("<!-- transformer-table: begin")[1].split("<!-- transformer-table: end -->")[0]
    assert "--block transformer-table" in block.splitlines()[0] and "| old |" not in block
    jax = next(line for line in block.splitlines() if line.startswith("| JAX"))
    cells = [c.strip() for c in jax.strip("|").split("|")]
    # 64 windows x context tokens in ~12.56 s; PyTorch's 10 s over JAX's 12.5 s; first epoch 30 s; 7.6 bits/byte
    from harness.summary import num, throughput
    assert cells[2] == num(64 / 12.5625 * throughput("transformer")[1]) and cells[3].startswith("0.80") and cells[5] == "30.0" and cells[7] == "7.600", cells
    assert cells[4].endswith("%"), cells
    with pytest.raises(UsageError, match="fewer than 5 runs"):
        readme_tables.regenerate(root, readme, name="transformer-table")


def test_the_readme_has_the_blocks():
    text = (REPO / "README.md").read_text()
    for name in readme_tables.BLOCKS:
        begin, end = readme_tables.markers(name)
        assert text.count(begin) == 1 and text.count(end) == 1, name


def test_replace_writes_one_block_and_keeps_the_rest(tmp_path):
    """bench/readme_block.py, shared by the three block writers: the block between its markers is
    replaced, the other blocks and the text around them are kept; a README without the block, or a
    block that lacks its own markers, is refused and the file left as it was."""
    from bench.readme_block import markers, replace

    readme = tmp_path / "README.md"
    readme.write_text(README + "\n<!-- bindings-table: begin: x -->\nkeep\n<!-- bindings-table: end -->\n")
    begin, end = markers("readme-tables")
    text = replace(readme, "readme-tables", f"{begin}: new -->\n| new |\n{end}")
    assert text == readme.read_text()
    assert "| old | table |" not in text and "| new |" in text and "\nkeep\n" in text
    assert text.startswith("# Title\n\nSome text.\n\n") and "\nMore text.\n" in text
    with pytest.raises(UsageError, match="no block between '<!-- inference-table: begin"):
        replace(readme, "inference-table", "<!-- inference-table: begin -->\n<!-- inference-table: end -->")
    with pytest.raises(ValueError, match="must start with"):
        replace(readme, "readme-tables", "| no markers |")
    assert readme.read_text() == text
