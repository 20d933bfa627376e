"""Where the files the harness ships besides its own Python code live, found through importlib.resources.

The model files of every language (python_models/, r_models/, julia_models/, each a package) and the
suite files are package data: the same lookups work in a checkout and in an installed wheel
(`pip install .`, then `dl-rosetta` from any folder). The suite files live in bench/suites/ in a
checkout and ship as harness/suites/ in the wheel (setup.py)."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_dir(package: str) -> Path:
    """The folder of an installed (or checked-out) package: a real folder, the packages are never zipped."""
    return Path(str(files(package)))


def source(entry: str) -> Path:
    """An implementation's file: a module 'python_models.pytorch.cnn' or a file 'r_models/keras/cnn.R'."""
    if "/" not in entry:
        package, _, module = entry.partition(".")
        return package_dir(package) / (module.replace(".", "/") + ".py")
    package, _, rest = entry.partition("/")
    return package_dir(package) / rest


def display(path: Path) -> str:
    """A shipped file as a user finds it: 'r_models/keras/cnn.R', relative to the packages' folder."""
    try:
        return str(Path(path).relative_to(package_dir("harness").parent))
    except ValueError:
        return str(path)


def suites_dir() -> Path:
    """The suite files: harness/suites/ in a wheel, bench/suites/ in a checkout."""
    shipped = package_dir("harness") / "suites"
    return shipped if shipped.is_dir() else package_dir("harness").parent / "bench" / "suites"
