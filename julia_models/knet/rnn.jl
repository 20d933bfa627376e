# The IMDB GRU sentiment model in Knet 1.4.10 (spec: harness/specs.py, RNN).
#
# Knet's RNN(rnnType=:gru) is the cuDNN GRU: gates (reset, update, new), two biases, the reset
# gate applied after the hidden matmul: the spec's formulation, on the GPU and on the CPU. Its
# weights live in one flat Param of size (1, 1, 68100) in cuDNN's packing: the input matrices
# of r, z, n (each stored transposed, (in, H) column-major), then the hidden ones, then the six
# bias vectors. That is torch's weight_ih and weight_hh flattened row by row, then bias_ih and
# bias_hh: harness/julia_layout.py packs and unpacks it.
module KnetRNN

using Knet: Knet, RNN, param, param0, value, xavier_uniform
using LinearAlgebra: diag, qr
using ..KnetTrainer: Trainer, arraytype

const VOCAB, EMBED, HIDDEN = 30_000, 125, 100

struct Classifier{E,W,B}
    emb::E        # Param (125, 30000): one column per 1-based token id
    gru::RNN
    fc_w::W       # Param (2, 100)
    fc_b::B       # Param (2,)
end

function (m::Classifier)(tokens)   # tokens: (B, 150) host matrix of 1-based ids
    x = m.emb[:, tokens]           # (125, B, 150), Knet's (X, B, T) sequence layout
    y = m.gru(x)                   # (100, B, 150); zero initial state (gru.h === nothing)
    return m.fc_w * y[:, :, end] .+ m.fc_b
end

# The spec's initialisers over the stacked matrices, in cuDNN's flat packing.
function gru_weights()
    bound = sqrt(6.0f0 / (3HIDDEN + EMBED))                       # Glorot over (300, 125)
    wi = bound .* (2 .* rand(Float32, 3HIDDEN, EMBED) .- 1)
    q, r = qr(randn(Float32, 3HIDDEN, HIDDEN))                    # orthonormal columns over (300, 100)
    wh = Array(q) .* transpose(sign.(diag(r)))
    return reshape(vcat(vec(permutedims(wi)), vec(permutedims(wh)), zeros(Float32, 6HIDDEN)), 1, 1, :)
end

function build(; seed, dropout, device, opt...)
    Knet.seed!(seed)   # the RNN model has no dropout; the flag changes nothing
    T = arraytype(device)
    emb = param(EMBED, VOCAB; init = (d...) -> 0.1f0 .* rand(Float32, d...) .- 0.05f0, atype = T)
    gru = RNN(EMBED, HIDDEN; rnnType = :gru, atype = T)
    copyto!(value(gru.w), gru_weights())
    fc_w, fc_b = param(2, HIDDEN; init = xavier_uniform, atype = T), param0(2; atype = T)
    table = ["embedding.weight" => (emb, :value), "gru.w" => (gru.w, :value),
             "fc.weight" => (fc_w, :value), "fc.bias" => (fc_b, :value)]
    return Trainer(Classifier(emb, gru, fc_w, fc_b), permutedims, [emb, gru.w, fc_w, fc_b], table; device,
                   fast_path = Dict{String,Any}("gru" => "Knet.RNN (cuDNN on the GPU)"), opt...)
end

end # module
