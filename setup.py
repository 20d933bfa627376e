"""Packages for the wheel; the rest of the metadata is in pyproject.toml.

The suite files stay in bench/suites/ in the checkout and ship inside the harness package as
harness/suites/ (package data), where harness.resources finds them in an installed wheel."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["harness", "harness.*", "python_models", "python_models.*", "julia_models",
                                      "julia_models.*", "r_models", "r_models.*", "cpp_models", "cpp_models.*"]) + ["harness.suites"],
      package_dir={"harness.suites": "bench/suites"})
