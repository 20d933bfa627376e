"""Flux 0.16: the models (cnn.jl, resnet50.jl, rnn.jl, trainer.jl), their weight mapping (weights.py)
and the Julia environment (env/juliapkg.json, env/Project.toml)."""
