# ResNet-50 v1.5 in Flux 0.16, written from the spec (harness/specs.py, RESNET50): the block
# list, widths, expansion, stem width and BatchNorm constants are all read from it.
#
# WHCN input (S, S, 3, N). Bottleneck blocks, stride on the 3×3 convolution, no convolution
# biases, BatchNorm with the spec's eps and momentum (Flux's convention is PyTorch's: running =
# (1 - m) running + m batch, with the unbiased batch variance). Every stride-2 convolution and
# the max-pool pad symmetrically (an integer `pad`).
module FluxResNet50

using Flux: Flux, BatchNorm, Chain, Conv, Dense, GlobalMeanPool, MaxPool, relu
using Random: Random
using ..FluxTrainer: Table, Trainer, batchnorm, conv_or_dense

# He-normal with fan-out (std = sqrt(2 / (kh*kw*out))); Flux's kaiming_normal uses fan-in.
he_fanout(dims...) = randn(Float32, dims...) .* sqrt(2.0f0 / (dims[1] * dims[2] * dims[end]))

conv(k, ch; stride = 1, pad = 0) = Conv((k, k), ch; stride, pad, bias = false, init = he_fanout)
bn(spec, c, act = identity) = BatchNorm(c, act; eps = Float32(spec["bn_eps"]), momentum = Float32(spec["bn_momentum"]))

struct Bottleneck{M,S}
    main::M
    shortcut::S        # identity, or the projection of the first block of a stage
end
Flux.@layer Bottleneck

(b::Bottleneck)(x) = relu.(b.main(x) .+ b.shortcut(x))

# One entry of spec["blocks"]: prefix, cin, width, stride, downsample.
function bottleneck(spec, block)
    cin, width, stride = block["cin"], block["width"], block["stride"]
    cout = width * spec["expansion"]
    main = Chain(conv1 = conv(1, cin => width), bn1 = bn(spec, width, relu),
                 conv2 = conv(3, width => width; stride, pad = 1), bn2 = bn(spec, width, relu),
                 conv3 = conv(1, width => cout), bn3 = bn(spec, cout))
    shortcut = block["downsample"] ? Chain(conv = conv(1, cin => cout; stride), bn = bn(spec, cout)) : identity
    return Bottleneck(main, shortcut)
end

stage(prefix) = Symbol(first(split(prefix, ".")))   # "layer2.0" -> :layer2

function model(spec)
    stem = spec["stem"]
    layers = Pair{Symbol,Any}[:conv1 => conv(7, spec["input_shape"][1] => stem; stride = 2, pad = 3),
                              :bn1 => bn(spec, stem, relu), :pool => MaxPool((3, 3); stride = 2, pad = 1)]
    stages = unique(stage(b["prefix"]) for b in spec["blocks"])
    for s in stages   # layer1..layer4, each a Chain of its blocks in the spec's order
        push!(layers, s => Chain([bottleneck(spec, b) for b in spec["blocks"] if stage(b["prefix"]) == s]...))
    end
    features = last(spec["stages"])[1] * spec["expansion"]   # 2048
    push!(layers, :gap => GlobalMeanPool(), :flatten => x -> reshape(x, :, size(x, ndims(x))),
          :fc => Dense(features => spec["num_classes"]))
    return Chain(; layers...)
end

function table(m, spec)
    t = Table(["conv1.weight" => (m.layers.conv1, :weight)])
    append!(t, batchnorm("bn1", m.layers.bn1))
    for s in unique(stage(b["prefix"]) for b in spec["blocks"]), (b, block) in enumerate(getfield(m.layers, s).layers)
        key = "$s.$(b - 1)"
        for i in 1:3
            push!(t, "$key.conv$i.weight" => (getfield(block.main.layers, Symbol("conv", i)), :weight))
            append!(t, batchnorm("$key.bn$i", getfield(block.main.layers, Symbol("bn", i))))
        end
        if block.shortcut !== identity
            push!(t, "$key.downsample.0.weight" => (block.shortcut.layers.conv, :weight))
            append!(t, batchnorm("$key.downsample.1", block.shortcut.layers.bn))
        end
    end
    return append!(t, conv_or_dense("fc", m.layers.fc))
end

function build(; spec, seed, dropout, device)
    Random.seed!(seed)   # ResNet-50 has no dropout; the flag changes nothing
    return Trainer(model(spec), m -> table(m, spec), spec; device, seed)
end

end # module
