"""Knet 1.4.10: the models (cnn.jl, resnet50.jl, rnn.jl, trainer.jl), their weight mapping (weights.py)
and the Julia environment (env/juliapkg.json, env/Project.toml)."""
