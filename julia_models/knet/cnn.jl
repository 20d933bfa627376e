# The CIFAR-10 CNN in Knet 1.4.10 (spec: harness/specs.py, CNN; every size below is read from it).
#
# Images arrive as WHCN (32, 32, 3, N), the column-major view of the harness's NCHW bytes.
# Knet's conv4 defaults to mode=0, a true convolution (the kernel is flipped); the canonical
# PyTorch kernels are cross-correlations, so julia_models/knet/weights.py flips them on the way
# in and out. Kernels are (kw, kh, in, out), conv biases (1, 1, C, 1), dense weights (out, in).
module KnetCNN

using Knet: Knet, conv4, dropout, mat, param, param0, pool, relu, xavier_uniform
using ..KnetTrainer: Trainer, arraytype

struct CNN
    w::Dict{String,Any}      # Params, keyed like the canonical file
    p::Vector{Float64}       # the three dropout rates
end

conv(w, x, k) = conv4(w[k * ".weight"], x; padding = 1) .+ w[k * ".bias"]
dense(w, x, k) = w[k * ".weight"] * x .+ w[k * ".bias"]

function (m::CNN)(x)                                            # (32, 32, 3, B)
    w = m.w
    x = relu.(conv(w, x, "conv1"))
    x = dropout(relu.(pool(conv(w, x, "conv2"))), m.p[1])       # pool: 2×2 max, stride 2 -> (16, 16, c2, B)
    x = relu.(conv(w, x, "conv3"))
    x = dropout(relu.(pool(conv(w, x, "conv4"))), m.p[2])       # (8, 8, c4, B)
    # mat: (prod(spec["flat"]), B) with w fastest, then h, then c: PyTorch's C,H,W flatten order.
    x = dropout(relu.(dense(w, mat(x), "fc1")), m.p[3])
    return dense(w, x, "fc2")                                   # (classes, B) logits
end

function build(; spec, seed, dropout, device)
    Knet.seed!(seed)
    T = arraytype(device)
    w = Dict{String,Any}()
    cins = [spec["input_shape"][1]; spec["channels"][1:end-1]]
    for (i, (cin, cout)) in enumerate(zip(cins, spec["channels"]))   # 3×3 kernels, Glorot-uniform with
        k = "conv$i"                                                 # fans kh*kw*in and kh*kw*out
        w[k * ".weight"] = param(3, 3, cin, cout; init = xavier_uniform, atype = T)
        w[k * ".bias"] = param0(1, 1, cout, 1; atype = T)
    end
    hidden, classes = spec["dense"], spec["num_classes"]
    w["fc1.weight"], w["fc1.bias"] = param(hidden, prod(spec["flat"]); init = xavier_uniform, atype = T), param0(hidden; atype = T)
    w["fc2.weight"], w["fc2.bias"] = param(classes, hidden; init = xavier_uniform, atype = T), param0(classes; atype = T)
    keys = spec["weight_keys"]
    model = CNN(w, dropout ? spec["dropout"] : zero(spec["dropout"]))
    return Trainer(model, x -> T(x), [w[k] for k in keys], [k => (w[k], :value) for k in keys], spec; device)
end

end # module
