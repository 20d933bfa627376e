# The IMDB GRU sentiment model in Knet 1.4.10 (spec: harness/specs.py, RNN; sizes read from it).
#
# Knet's RNN(rnnType=:gru) is the cuDNN GRU: gates (reset, update, new), two biases, the reset
# gate applied after the hidden matmul: the spec's formulation, on the GPU and on the CPU. Its
# weights live in one flat Param of size (1, 1, 3H(E + H + 2)) in cuDNN's packing: the input
# matrices of r, z, n (each stored transposed, (in, H) column-major), then the hidden ones, then
# the six bias vectors. That is torch's weight_ih and weight_hh flattened row by row, then
# bias_ih and bias_hh: julia_models/knet/weights.py packs and unpacks it.
module KnetRNN

using Knet: Knet, RNN, param, param0, value, xavier_uniform
using LinearAlgebra: diag, qr
using ..DLRosetta: uniform_bounds
using ..KnetTrainer: Trainer, arraytype

struct Classifier{E,W,B}
    emb::E        # Param (embed, vocab): one column per 1-based token id
    gru::RNN
    fc_w::W       # Param (classes, hidden)
    fc_b::B       # Param (classes,)
end

function (m::Classifier)(tokens)   # tokens: (B, T) host matrix of 1-based ids
    x = m.emb[:, tokens]           # (embed, B, T), Knet's (X, B, T) sequence layout
    y = m.gru(x)                   # (hidden, B, T); zero initial state (gru.h === nothing)
    return m.fc_w * y[:, :, end] .+ m.fc_b
end

# The spec's initialisers over the stacked matrices, in cuDNN's flat packing.
function gru_weights(E, H)
    bound = sqrt(6.0f0 / (3H + E))                       # Glorot over (3H, E)
    wi = bound .* (2 .* rand(Float32, 3H, E) .- 1)
    q, r = qr(randn(Float32, 3H, H))                     # orthonormal columns over (3H, H)
    wh = Array(q) .* transpose(sign.(diag(r)))
    return reshape(vcat(vec(permutedims(wi)), vec(permutedims(wh)), zeros(Float32, 6H)), 1, 1, :)
end

function build(; spec, seed, dropout, device)
    Knet.seed!(seed)   # the RNN model has no dropout; the flag changes nothing
    T = arraytype(device)
    E, H, classes = spec["embed"], spec["hidden"], spec["num_classes"]
    lo, hi = uniform_bounds(spec, "embedding.weight")
    emb = param(E, spec["vocab"]; init = (d...) -> lo .+ (hi - lo) .* rand(Float32, d...), atype = T)
    gru = RNN(E, H; rnnType = :gru, atype = T)
    copyto!(value(gru.w), gru_weights(E, H))
    fc_w, fc_b = param(classes, H; init = xavier_uniform, atype = T), param0(classes; atype = T)
    table = ["embedding.weight" => (emb, :value), "gru.w" => (gru.w, :value),
             "fc.weight" => (fc_w, :value), "fc.bias" => (fc_b, :value)]
    return Trainer(Classifier(emb, gru, fc_w, fc_b), permutedims, [emb, gru.w, fc_w, fc_b], table, spec; device,
                   fast_path = Dict{String,Any}("gru" => "Knet.RNN (cuDNN on the GPU)"))
end

end # module
