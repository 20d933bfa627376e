# ResNet-50 v1.5 in Knet 1.4.10, written from the spec (harness/specs.py, RESNET50).
#
# WHCN input (S, S, 3, N). Bottleneck blocks [3, 4, 6, 3], stride on the 3×3 convolution, no
# convolution biases, symmetric integer padding. Knet keeps a BatchNorm's scale and shift in
# one Param of length 2C ([γ; β], bnparams) and its running statistics in a BNMoments of
# (1, 1, C, 1) arrays; julia_layout.py splits and reshapes them into the canonical keys.
module KnetResNet50

using Knet: Knet, batchnorm, bnmoments, bnparams, conv4, param, pool, relu, training, value
using Statistics: mean
using ..KnetTrainer: Trainer, arraytype

const STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))   # (width, blocks, first stride)
const MOMENTS = ((".running_mean", :mean), (".running_var", :var))    # canonical key suffix, BNMoments field

# He-normal with fan-out: std = sqrt(2 / (kh*kw*out)).
he_fanout(dims...) = randn(Float32, dims...) .* sqrt(2.0f0 / (dims[1] * dims[2] * dims[4]))

struct ResNet
    w::Dict{String,Any}              # conv kernels and BatchNorm [γ; β] Params
    m::Dict{String,Any}              # BatchNorm running statistics (BNMoments)
    blocks::Vector{Tuple{String,Int,Bool}}   # (prefix, stride, has_downsample)
end

# Knet's CPU batchnorm stores the biased batch variance in the running average (cuDNN, on the
# GPU, stores the unbiased one, as PyTorch does); correct it to the unbiased one on the CPU.
function bn(r::ResNet, x, k)
    moments = r.m[k]
    training() && value(x) isa Array || return batchnorm(x, moments, r.w[k * ".params"]; eps = 1e-5)
    old = copy(moments.var)
    y = batchnorm(x, moments, r.w[k * ".params"]; eps = 1e-5)
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
    x = mean(x; dims = (1, 2))                               # global average pool -> (1, 1, 2048, B)
    return r.w["fc.weight"] * reshape(x, 2048, :) .+ r.w["fc.bias"]
end

function build(; seed, dropout, device, opt...)
    Knet.seed!(seed)   # ResNet-50 has no dropout; the flag changes nothing
    T = arraytype(device)
    w, m, blocks, order = Dict{String,Any}(), Dict{String,Any}(), Tuple{String,Int,Bool}[], String[]
    function addconv(k, ksize, cin, cout)
        w[k * ".weight"] = param(ksize, ksize, cin, cout; init = he_fanout, atype = T)
        push!(order, k * ".weight")
    end
    function addbn(k, c)
        w[k * ".params"] = param(bnparams(Float32, c); atype = T)
        m[k] = bnmoments(momentum = 0.1, mean = T(zeros(Float32, 1, 1, c, 1)), var = T(ones(Float32, 1, 1, c, 1)))
        push!(order, k * ".params")
    end
    addconv("conv1", 7, 3, 64); addbn("bn1", 64)
    cin = 64
    for (stage, (width, nblocks, stride)) in enumerate(STAGES), b in 1:nblocks
        key, cout = "layer$stage.$(b - 1)", 4width
        addconv(key * ".conv1", 1, cin, width); addbn(key * ".bn1", width)
        addconv(key * ".conv2", 3, width, width); addbn(key * ".bn2", width)
        addconv(key * ".conv3", 1, width, cout); addbn(key * ".bn3", cout)
        if b == 1
            addconv(key * ".downsample.0", 1, cin, cout); addbn(key * ".downsample.1", cout)
        end
        push!(blocks, (key, b == 1 ? stride : 1, b == 1))
        cin = cout
    end
    w["fc.weight"], w["fc.bias"] = param(10, 2048; atype = T), param(zeros(Float32, 10); atype = T)
    append!(order, ["fc.weight", "fc.bias"])
    stats = [k * s => (m[k], f) for k in sort!(collect(keys(m))) for (s, f) in MOMENTS]
    table = vcat([k => (w[k], :value) for k in order], stats)
    return Trainer(ResNet(w, m, blocks), x -> T(x), [w[k] for k in order], table; device, opt...)
end

end # module
