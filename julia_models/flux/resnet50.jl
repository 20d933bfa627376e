# ResNet-50 v1.5 in Flux 0.16, written from the spec (harness/specs.py, RESNET50).
#
# WHCN input (S, S, 3, N). Bottleneck blocks [3, 4, 6, 3], stride on the 3×3 convolution,
# no convolution biases, BatchNorm eps 1e-5 and momentum 0.1 (Flux's convention is PyTorch's:
# running = 0.9 running + 0.1 batch, with the unbiased batch variance). Every stride-2
# convolution and the max-pool pad symmetrically (an integer `pad`).
module FluxResNet50

using Flux: Flux, BatchNorm, Chain, Conv, Dense, GlobalMeanPool, MaxPool, relu
using Random: Random
using ..FluxTrainer: Table, Trainer, batchnorm, conv_or_dense

const STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))   # (width, blocks, first stride)

# He-normal with fan-out (std = sqrt(2 / (kh*kw*out))); Flux's kaiming_normal uses fan-in.
he_fanout(dims...) = randn(Float32, dims...) .* sqrt(2.0f0 / (dims[1] * dims[2] * dims[4]))

conv(k, ch; stride = 1, pad = 0) = Conv((k, k), ch; stride, pad, bias = false, init = he_fanout)
bn(c, act = identity) = BatchNorm(c, act; eps = 1.0f-5, momentum = 0.1f0)

struct Bottleneck{M,S}
    main::M
    shortcut::S        # identity, or the projection of the first block of a stage
end
Flux.@layer Bottleneck

(b::Bottleneck)(x) = relu.(b.main(x) .+ b.shortcut(x))

function Bottleneck(cin, width, stride)
    cout = 4width
    main = Chain(conv1 = conv(1, cin => width), bn1 = bn(width, relu),
                 conv2 = conv(3, width => width; stride, pad = 1), bn2 = bn(width, relu),
                 conv3 = conv(1, width => cout), bn3 = bn(cout))
    down = stride != 1 || cin != cout
    shortcut = down ? Chain(conv = conv(1, cin => cout; stride), bn = bn(cout)) : identity
    return Bottleneck(main, shortcut)
end

function model()
    layers = Pair{Symbol,Any}[:conv1 => conv(7, 3 => 64; stride = 2, pad = 3), :bn1 => bn(64, relu),
                              :pool => MaxPool((3, 3); stride = 2, pad = 1)]
    cin = 64
    for (stage, (width, blocks, stride)) in enumerate(STAGES)
        blk = [Bottleneck(b == 1 ? cin : 4width, width, b == 1 ? stride : 1) for b in 1:blocks]
        push!(layers, Symbol("layer", stage) => Chain(blk...))
        cin = 4width
    end
    push!(layers, :gap => GlobalMeanPool(), :flatten => x -> reshape(x, :, size(x, 4)), :fc => Dense(2048 => 10))
    return Chain(; layers...)
end

function table(m)
    t = Table(["conv1.weight" => (m.layers.conv1, :weight)])
    append!(t, batchnorm("bn1", m.layers.bn1))
    for stage in 1:4, (b, block) in enumerate(getfield(m.layers, Symbol("layer", stage)).layers)
        key = "layer$stage.$(b - 1)"
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

function build(; seed, dropout, device, opt...)
    Random.seed!(seed)   # ResNet-50 has no dropout; the flag changes nothing
    return Trainer(model(), table, 1:10; device, opt...)
end

end # module
