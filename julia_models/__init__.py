"""Julia implementations (`<framework>/<model>.jl`) and their Python side: the hand-off of data
(handoff.py) and each framework's weight mapping beside its models (flux/weights.py, knet/weights.py).

Importing this package imports numpy only, never juliacall (whose import would start Julia)."""
