# The IMDB GRU sentiment model in Flux 0.16 (spec: harness/specs.py, RNN; sizes read from it).
#
# Token ids arrive as a (maxlen, N) matrix of 1-based ids (handoff.py adds 1: id 0, the
# padding, is column 1 of the embedding). Flux's own GRUCell (0.16) is the reset-after form but
# keeps a single bias vector: it has no separate b_hn inside r .* (W_hn h + b_hn), so it cannot
# hold the spec's 600 GRU biases (3,818,002 parameters instead of 3,818,302). The layer below is
# the cuDNN/PyTorch GRU written as a Flux layer, in Flux's own stacked (r, z, n) layout.
module FluxRNN

using Flux: Flux, Dense, Embedding, sigmoid
using MLUtils: chunk, zeros_like
using Random: Random
using ..DLRosetta: uniform_bounds
using ..FluxTrainer: Table, Trainer, conv_or_dense

struct CuDNNGRU{M,V}
    Wi::M   # (3H, in), gates stacked (reset, update, new) as in PyTorch's weight_ih
    Wh::M   # (3H, H)
    bi::V   # (3H,)
    bh::V   # (3H,)
end
Flux.@layer CuDNNGRU

# x: (in, T, B) -> the last step's hidden state (H, B), from a zero initial state.
#
# The loop is written the way Flux 0.16's own recurrence is (src/layers/recurrent.jl: `scan`
# walks `eachslice(x, dims = 2)`, GRUCell splits its gates with `chunk`), because both have
# cheap adjoints under Zygote: ChainRules' rrule for eachslice allocates ONE (3H, T, B) gradient
# for the whole sequence (src/rulesets/Base/indexing.jl, ∇eachslice), MLUtils' rrule for chunk one
# (3H, B) per step. Slicing gx[:, t, :] and gi[1:H, :] instead costs, in every step's pullback, a
# zero array the size of the whole source (ChainRules' ∇getindex) plus its accumulation: 2 × 11.5 MB
# per step at batch 64. Here a step allocates arrays of at most 3H × B (76.8 KB at H = 100, B = 64)
# and ∂Wh (3H × H, 120 KB): about 0.6 MB forward and 0.7 MB backward (an estimate from the
# operations, see julia_models/README.md for the command that measures it).
function (m::CuDNNGRU)(x)
    D, T, B = size(x)
    H = size(m.Wh, 2)
    gx = reshape(m.Wi * reshape(x, D, T * B) .+ m.bi, 3H, T, B)   # every step's input projection at once
    h = zeros_like(m.Wh, (H, B))
    for gi in eachslice(gx; dims = 2)             # (3H, B) views, one per step
        gh = m.Wh * h .+ m.bh                     # (3H, B)
        xr, xz, xn = chunk(gi, 3; dims = 1)       # gates (reset, update, new): (H, B) views
        hr, hz, hn = chunk(gh, 3; dims = 1)
        r = sigmoid.(xr .+ hr)
        z = sigmoid.(xz .+ hz)
        n = tanh.(xn .+ r .* hn)                  # reset applied after the matmul (cuDNN/PyTorch)
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

(m::Classifier)(tokens) = m.fc(m.gru(m.embedding(tokens)))   # (T, B) -> (embed, T, B) -> (hidden, B) -> (classes, B)

uniform(lo, hi) = (dims...) -> lo .+ (hi - lo) .* rand(Float32, dims...)

function model(spec)
    E, H = spec["embed"], spec["hidden"]
    gru = CuDNNGRU(Flux.glorot_uniform(3H, E),   # Glorot over the stacked (3H, E) matrix
                   Flux.orthogonal(3H, H),       # orthonormal columns over the stacked (3H, H)
                   zeros(Float32, 3H), zeros(Float32, 3H))
    embedding = Embedding(spec["vocab"] => E; init = uniform(uniform_bounds(spec, "embedding.weight")...))
    return Classifier(embedding, gru, Dense(H => spec["num_classes"]))
end

table(m) = Table(vcat(["embedding.weight" => (m.embedding, :weight),   # (embed, vocab): one column per id
                       "gru.weight_ih" => (m.gru, :Wi), "gru.weight_hh" => (m.gru, :Wh),
                       "gru.bias_ih" => (m.gru, :bi), "gru.bias_hh" => (m.gru, :bh)],
                      conv_or_dense("fc", m.fc)))

function build(; spec, seed, dropout, device)
    Random.seed!(seed)   # the RNN model has no dropout; the flag changes nothing
    gru = "a Flux layer in the cuDNN form, a Zygote loop over eachslice steps (no cuDNN RNN kernel)"
    return Trainer(model(spec), table, spec; device, seed, fast_path = Dict{String,Any}("gru" => gru))
end

end # module
