"""The three models written in R (`<framework>/<model>.R`) and the glue R sources first (dl_rosetta.R);
the harness hosts them through rpy2 (harness/runtimes/r.py). A package only so that an installed
harness finds these files through importlib.resources (harness/resources.py)."""
