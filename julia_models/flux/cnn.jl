# The CIFAR-10 CNN in Flux 0.16 (spec: harness/specs.py, CNN).
#
# Images arrive as WHCN (32, 32, 3, N), the column-major view of the harness's NCHW bytes.
# Flux's Conv is a true convolution (the kernel is flipped, NNlib's default); the canonical
# PyTorch kernels are cross-correlations, so harness/julia_layout.py flips them on the way in
# and out. Kernels are (kw, kh, in, out); Dense weights are (out, in), as in PyTorch.
module FluxCNN

using Flux: Flux, Chain, Conv, Dense, Dropout, MaxPool, relu
using Random: Random
using ..FluxTrainer: Trainer, conv_or_dense

const DROPOUT = (0.25, 0.25, 0.5)   # after conv2's pool, conv4's pool, fc1

# 8×8×100 WHCN features -> (6400, N). Column-major order puts w fastest, then h, then c:
# the same feature order as PyTorch's C,H,W flatten, so fc1's columns need no permutation.
flatten(x) = reshape(x, :, size(x, ndims(x)))

# Glorot-uniform kernels (Flux's default; fans in*kh*kw and out*kh*kw) and zero biases.
model(p) = Chain(
    conv1 = Conv((3, 3), 3 => 50, relu; pad = 1),
    conv2 = Conv((3, 3), 50 => 50; pad = 1),
    pool2 = MaxPool((2, 2)),                       # (16, 16, 50, N)
    relu2 = x -> relu.(x),
    drop2 = Dropout(p[1]),
    conv3 = Conv((3, 3), 50 => 100, relu; pad = 1),
    conv4 = Conv((3, 3), 100 => 100; pad = 1),
    pool4 = MaxPool((2, 2)),                       # (8, 8, 100, N)
    relu4 = x -> relu.(x),
    drop4 = Dropout(p[2]),
    flatten = flatten,                             # (6400, N)
    fc1 = Dense(6400 => 512, relu),
    drop5 = Dropout(p[3]),
    fc2 = Dense(512 => 10),                        # logits; softmax is inside the loss
)

const WEIGHTED = (:conv1, :conv2, :conv3, :conv4, :fc1, :fc2)

table(m) = vcat((conv_or_dense(String(k), getfield(m.layers, k)) for k in WEIGHTED)...)

function build(; seed, dropout, device, opt...)
    Random.seed!(seed)   # initialisers and Dropout draw from the default RNG
    return Trainer(model(dropout ? DROPOUT : (0.0, 0.0, 0.0)), table, 1:10; device, opt...)
end

end # module
