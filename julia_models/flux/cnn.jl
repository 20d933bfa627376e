# The CIFAR-10 CNN in Flux 0.16 (spec: harness/specs.py, CNN; every size below is read from it).
#
# Images arrive as WHCN (32, 32, 3, N), the column-major view of the harness's NCHW bytes.
# Flux's Conv is a true convolution (the kernel is flipped, NNlib's default); the canonical
# PyTorch kernels are cross-correlations, so julia_models/flux/weights.py flips them on the way
# in and out. Kernels are (kw, kh, in, out); Dense weights are (out, in), as in PyTorch.
module FluxCNN

using Flux: Flux, Chain, Conv, Dense, Dropout, MaxPool, relu
using Random: Random
using ..FluxTrainer: Table, Trainer, conv_or_dense

# (C, H, W) map -> (C*H*W, N). Column-major order puts w fastest, then h, then c: the same
# feature order as PyTorch's C,H,W flatten, so fc1's columns need no permutation.
flatten(x) = reshape(x, :, size(x, ndims(x)))

# Glorot-uniform kernels (Flux's default; fans in*kh*kw and out*kh*kw) and zero biases.
# spec["channels"]: conv1..conv4 outputs, 3×3, pad 1; p: the three dropout rates.
function model(spec, p)
    cin = spec["input_shape"][1]
    c1, c2, c3, c4 = spec["channels"]
    return Chain(
        conv1 = Conv((3, 3), cin => c1, relu; pad = 1),
        conv2 = Conv((3, 3), c1 => c2; pad = 1),
        pool2 = MaxPool((2, 2)),                       # (16, 16, c2, N)
        relu2 = x -> relu.(x),
        drop2 = Dropout(p[1]),
        conv3 = Conv((3, 3), c2 => c3, relu; pad = 1),
        conv4 = Conv((3, 3), c3 => c4; pad = 1),
        pool4 = MaxPool((2, 2)),                       # (8, 8, c4, N)
        relu4 = x -> relu.(x),
        drop4 = Dropout(p[2]),
        flatten = flatten,                             # (prod(spec["flat"]), N) = (6400, N)
        fc1 = Dense(prod(spec["flat"]) => spec["dense"], relu),
        drop5 = Dropout(p[3]),
        fc2 = Dense(spec["dense"] => spec["num_classes"]),   # logits; softmax is inside the loss
    )
end

const WEIGHTED = (:conv1, :conv2, :conv3, :conv4, :fc1, :fc2)

table(m) = Table(vcat((conv_or_dense(String(k), getfield(m.layers, k)) for k in WEIGHTED)...))

function build(; spec, seed, dropout, device)
    Random.seed!(seed)   # initialisers and Dropout (on the CPU) draw from the default RNG
    rates = dropout ? spec["dropout"] : zero(spec["dropout"])
    return Trainer(model(spec, rates), table, spec; device, seed)
end

end # module
