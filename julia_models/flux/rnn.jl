# The IMDB GRU sentiment model in Flux 0.16 (spec: harness/specs.py, RNN).
#
# Token ids arrive as a (150, N) matrix of 1-based ids (julia_layout adds 1: id 0, the
# padding, is row 1 of the embedding). Flux's own GRUCell (0.16) is the reset-after form but
# keeps a single bias vector: it has no separate b_hn inside r .* (W_hn h + b_hn), so it
# cannot hold the spec's 600 GRU biases (3,818,002 parameters instead of 3,818,302). The cell
# below is the cuDNN/PyTorch GRU written as a Flux layer, in Flux's own stacked (r, z, n) layout.
module FluxRNN

using Flux: Flux, Dense, Embedding, sigmoid
using Random: Random
using ..FluxTrainer: Table, Trainer, conv_or_dense

const VOCAB, EMBED, HIDDEN = 30_000, 125, 100

struct CuDNNGRU{M,V}
    Wi::M   # (3H, in), gates stacked (reset, update, new) as in PyTorch's weight_ih
    Wh::M   # (3H, H)
    bi::V   # (3H,)
    bh::V   # (3H,)
end
Flux.@layer CuDNNGRU

# x: (in, T, B) -> the last step's hidden state (H, B), from a zero initial state.
function (m::CuDNNGRU)(x)
    H = size(m.Wh, 2)
    D, T, B = size(x)
    gx = reshape(m.Wi * reshape(x, D, T * B) .+ m.bi, 3H, T, B)   # every step's input projection at once
    h = zero(gx[1:H, 1, :])
    for t in 1:T
        gi = gx[:, t, :]
        gh = m.Wh * h .+ m.bh
        r = sigmoid.(gi[1:H, :] .+ gh[1:H, :])
        z = sigmoid.(gi[H+1:2H, :] .+ gh[H+1:2H, :])
        n = tanh.(gi[2H+1:3H, :] .+ r .* gh[2H+1:3H, :])           # reset applied after the matmul
        h = (1 .- z) .* n .+ z .* h
    end
    return h
end

struct Classifier{E,G,D}
    embedding::E
    gru::G
    fc::D
end
Flux.@layer Classifier

(m::Classifier)(tokens) = m.fc(m.gru(m.embedding(tokens)))   # (150, B) -> (125, 150, B) -> (100, B) -> (2, B)

uniform(lo, hi) = (dims...) -> lo .+ (hi - lo) .* rand(Float32, dims...)

function model()
    gru = CuDNNGRU(Flux.glorot_uniform(3HIDDEN, EMBED),   # Glorot over the stacked (300, 125) matrix
                   Flux.orthogonal(3HIDDEN, HIDDEN),      # orthonormal columns over the stacked (300, 100)
                   zeros(Float32, 3HIDDEN), zeros(Float32, 3HIDDEN))
    return Classifier(Embedding(VOCAB => EMBED; init = uniform(-0.05f0, 0.05f0)), gru, Dense(HIDDEN => 2))
end

table(m) = Table(vcat(["embedding.weight" => (m.embedding, :weight),   # (125, 30000): one column per id
                       "gru.weight_ih" => (m.gru, :Wi), "gru.weight_hh" => (m.gru, :Wh),
                       "gru.bias_ih" => (m.gru, :bi), "gru.bias_hh" => (m.gru, :bh)],
                      conv_or_dense("fc", m.fc)))

function build(; seed, dropout, device, opt...)
    Random.seed!(seed)   # the RNN model has no dropout; the flag changes nothing
    gru = "a Flux layer in the cuDNN form, a Zygote loop over the 150 steps (no cuDNN RNN kernel)"
    return Trainer(model(), table, 1:2; device, fast_path = Dict{String,Any}("gru" => gru), opt...)
end

end # module
