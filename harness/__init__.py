"""DL Rosetta: the same models, many frameworks and languages, one clock."""

__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)
