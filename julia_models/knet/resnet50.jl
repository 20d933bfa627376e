# ResNet-50 v1.5 in Knet 1.4.10, written from the spec (harness/specs.py, RESNET50): the block
# list, widths, expansion, stem width and BatchNorm constants are all read from it.
#
# WHCN input (S, S, 3, N). Bottleneck blocks, stride on the 3×3 convolution, no convolution
# biases, symmetric integer padding. Knet keeps a BatchNorm's scale and shift in one Param of
# length 2C ([γ; β], bnparams) and its running statistics in a BNMoments of (1, 1, C, 1) arrays;
# julia_models/knet/weights.py splits and reshapes them into the canonical keys.
module KnetResNet50

using Knet: Knet, batchnorm, bnmoments, bnparams, conv4, param, pool, relu, training, value
using Statistics: mean
using ..KnetTrainer: Trainer, arraytype

const MOMENTS = ((".running_mean", :mean), (".running_var", :var))    # canonical key suffix, BNMoments field

# He-normal with fan-out: std = sqrt(2 / (kh*kw*out)).
he_fanout(dims...) = randn(Float32, dims...) .* sqrt(2.0f0 / (dims[1] * dims[2] * dims[end]))

struct ResNet
    w::Dict{String,Any}                      # conv kernels and BatchNorm [γ; β] Params
    m::Dict{String,Any}                      # BatchNorm running statistics (BNMoments)
    blocks::Vector{Tuple{String,Int,Bool}}   # (prefix, stride, has_downsample), from spec["blocks"]
    eps::Float64                             # spec["bn_eps"]
    features::Int                            # channels into fc: last stage width × expansion
end

# Knet's CPU batchnorm stores the biased batch variance in the running average (cuDNN, on the
# GPU, stores the unbiased one, as PyTorch does); correct it to the unbiased one on the CPU.
function bn(r::ResNet, x, k)
    moments = r.m[k]
    training() && value(x) isa Array || return batchnorm(x, moments, r.w[k * ".params"]; eps = r.eps)
    old = copy(moments.var)
    y = batchnorm(x, moments, r.w[k * ".params"]; eps = r.eps)
    n = length(x) ÷ size(x, 3)
    moments.var .+= (n / (n - 1) - 1) .* (moments.var .- (1 - moments.momentum) .* old)
    return y
end

conv(r::ResNet, x, k; stride = 1, padding = 0) = conv4(r.w[k * ".weight"], x; stride, padding)

function bottleneck(r::ResNet, x, key, stride, down)
    y = relu.(bn(r, conv(r, x, key * ".conv1"), key * ".bn1"))
    y = relu.(bn(r, conv(r, y, key * ".conv2"; stride, padding = 1), key * ".bn2"))
    y = bn(r, conv(r, y, key * ".conv3"), key * ".bn3")
    s = down ? bn(r, conv(r, x, key * ".downsample.0"; stride), key * ".downsample.1") : x
    return relu.(y .+ s)
end

function (r::ResNet)(x)
    x = relu.(bn(r, conv(r, x, "conv1"; stride = 2, padding = 3), "bn1"))
    x = pool(x; window = 3, stride = 2, padding = 1)         # max
    for (key, stride, down) in r.blocks
        x = bottleneck(r, x, key, stride, down)
    end
    x = mean(x; dims = (1, 2))                               # global average pool -> (1, 1, features, B)
    return r.w["fc.weight"] * reshape(x, r.features, :) .+ r.w["fc.bias"]
end

function build(; spec, seed, dropout, device)
    Knet.seed!(seed)   # ResNet-50 has no dropout; the flag changes nothing
    T = arraytype(device)
    w, m, order = Dict{String,Any}(), Dict{String,Any}(), String[]
    function addconv(k, ksize, cin, cout)
        w[k * ".weight"] = param(ksize, ksize, cin, cout; init = he_fanout, atype = T)
        push!(order, k * ".weight")
    end
    function addbn(k, c)
        w[k * ".params"] = param(bnparams(Float32, c); atype = T)
        m[k] = bnmoments(momentum = spec["bn_momentum"], mean = T(zeros(Float32, 1, 1, c, 1)),
                         var = T(ones(Float32, 1, 1, c, 1)))
        push!(order, k * ".params")
    end
    stem, expansion = spec["stem"], spec["expansion"]
    addconv("conv1", 7, spec["input_shape"][1], stem); addbn("bn1", stem)
    for b in spec["blocks"]   # prefix, cin, width, stride, downsample
        key, cin, width, cout = b["prefix"], b["cin"], b["width"], b["width"] * expansion
        addconv(key * ".conv1", 1, cin, width); addbn(key * ".bn1", width)
        addconv(key * ".conv2", 3, width, width); addbn(key * ".bn2", width)
        addconv(key * ".conv3", 1, width, cout); addbn(key * ".bn3", cout)
        if b["downsample"]
            addconv(key * ".downsample.0", 1, cin, cout); addbn(key * ".downsample.1", cout)
        end
    end
    features = last(spec["stages"])[1] * expansion
    classes = spec["num_classes"]
    w["fc.weight"], w["fc.bias"] = param(classes, features; atype = T), param(zeros(Float32, classes); atype = T)
    append!(order, ["fc.weight", "fc.bias"])
    stats = [k * s => (m[k], f) for k in sort!(collect(keys(m))) for (s, f) in MOMENTS]
    table = vcat([k => (w[k], :value) for k in order], stats)
    blocks = [(b["prefix"], b["stride"], b["downsample"]) for b in spec["blocks"]]
    model = ResNet(w, m, blocks, spec["bn_eps"], features)
    return Trainer(model, x -> T(x), [w[k] for k in order], table, spec; device)
end

end # module
