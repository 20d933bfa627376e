# The CIFAR-10 CNN in Knet 1.4.10 (spec: harness/specs.py, CNN).
#
# Images arrive as WHCN (32, 32, 3, N), the column-major view of the harness's NCHW bytes.
# Knet's conv4 defaults to mode=0, a true convolution (the kernel is flipped); the canonical
# PyTorch kernels are cross-correlations, so harness/julia_layout.py flips them on the way in
# and out. Kernels are (kw, kh, in, out), conv biases (1, 1, C, 1), dense weights (out, in).
module KnetCNN

using Knet: Knet, conv4, dropout, mat, param, param0, pool, relu, xavier_uniform
using ..KnetTrainer: Trainer, arraytype

const DROPOUT = (0.25, 0.25, 0.5)   # after conv2's pool, conv4's pool, fc1
const CONVS = (("conv1", 3, 50), ("conv2", 50, 50), ("conv3", 50, 100), ("conv4", 100, 100))
const KEYS = [k * s for k in ("conv1", "conv2", "conv3", "conv4", "fc1", "fc2") for s in (".weight", ".bias")]

struct CNN
    w::Dict{String,Any}      # Params, keyed like the canonical file
    p::NTuple{3,Float64}     # dropout rates
end

conv(w, x, k) = conv4(w[k * ".weight"], x; padding = 1) .+ w[k * ".bias"]
dense(w, x, k) = w[k * ".weight"] * x .+ w[k * ".bias"]

function (m::CNN)(x)                                            # (32, 32, 3, B)
    w = m.w
    x = relu.(conv(w, x, "conv1"))
    x = dropout(relu.(pool(conv(w, x, "conv2"))), m.p[1])       # pool: 2×2 max, stride 2 -> (16, 16, 50, B)
    x = relu.(conv(w, x, "conv3"))
    x = dropout(relu.(pool(conv(w, x, "conv4"))), m.p[2])       # (8, 8, 100, B)
    # mat: (6400, B) with w fastest, then h, then c: PyTorch's C,H,W flatten order.
    x = dropout(relu.(dense(w, mat(x), "fc1")), m.p[3])
    return dense(w, x, "fc2")                                   # (10, B) logits
end

function build(; seed, dropout, device, opt...)
    Knet.seed!(seed)
    T = arraytype(device)
    w = Dict{String,Any}()
    for (k, cin, cout) in CONVS   # Glorot-uniform with fans kh*kw*in and kh*kw*out (Knet's xavier_uniform)
        w[k * ".weight"] = param(3, 3, cin, cout; init = xavier_uniform, atype = T)
        w[k * ".bias"] = param0(1, 1, cout, 1; atype = T)
    end
    w["fc1.weight"], w["fc1.bias"] = param(512, 6400; init = xavier_uniform, atype = T), param0(512; atype = T)
    w["fc2.weight"], w["fc2.bias"] = param(10, 512; init = xavier_uniform, atype = T), param0(10; atype = T)
    model = CNN(w, dropout ? DROPOUT : (0.0, 0.0, 0.0))
    return Trainer(model, x -> T(x), [w[k] for k in KEYS], [k => (w[k], :value) for k in KEYS]; device, opt...)
end

end # module
