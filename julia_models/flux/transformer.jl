# The character-level GPT in Flux 0.16 (spec: harness/specs.py, TRANSFORMER; every size below is read from it).
#
# Windows arrive as (T, N) 1-based byte ids (handoff.py adds 1), activations are (C, T, B).
# Attention is Flux.MultiHeadAttention: q, k, v as three Dense layers (julia_models/flux/weights.py
# cuts the canonical packed (3C, C) matrix into them) and NNlib.dot_product_attention, the explicit
# softmax(q k^T / sqrt(head width)) v with dropout on the probabilities, masked by
# NNlib.make_causal_mask (key ≤ query). GELU is NNlib's exact gelu_erf (its SpecialFunctions
# extension). LayerNorm is written here in PyTorch's form, (x - μ) / sqrt(σ² + ϵ): Flux 0.16's
# LayerNorm divides by σ + ϵ (Flux.normalise), which moves a residual stream of std 0.03 by 0.6 %.
# The logits are the token table's transpose times the last LayerNorm's output (tied).
module FluxTransformer

using Flux: Flux, Chain, Dense, Dropout, Embedding, MultiHeadAttention, gelu_erf
using NNlib: make_causal_mask
using Random: Random
using SpecialFunctions: SpecialFunctions   # loads NNlib's gelu_erf (ext/NNlibSpecialFunctionsExt.jl)
using Statistics: mean
using ..FluxTrainer: Table, Trainer

"""torch.nn.LayerNorm over the first (feature) dimension: (x - μ) / sqrt(σ² + ϵ) * weight + bias."""
struct TorchLayerNorm{V}
    weight::V
    bias::V
    eps::Float32
end
Flux.@layer TorchLayerNorm

TorchLayerNorm(c::Integer, eps) = TorchLayerNorm(ones(Float32, c), zeros(Float32, c), Float32(eps))

function (ln::TorchLayerNorm)(x)
    μ = mean(x; dims = 1)
    σ² = mean(abs2.(x .- μ); dims = 1)   # biased variance, as PyTorch's
    return (x .- μ) ./ sqrt.(σ² .+ ln.eps) .* ln.weight .+ ln.bias
end

struct Block{N,A,D,M}
    ln1::N
    attn::A      # MultiHeadAttention: q_proj, k_proj, v_proj, attn_drop (on the probabilities), out_proj
    drop::D      # after the attention projection
    ln2::N
    mlp::M       # Chain(fc, proj, drop)
end
Flux.@layer Block

function (b::Block)(x)                   # x: (C, T, B)
    h = b.ln1(x)
    a, _ = b.attn(h; mask = make_causal_mask(h))   # (C, T, B); the (T, T, heads, B) probabilities unused
    x = x .+ b.drop(a)                   # pre-LayerNorm: the residual stream itself is never normalised
    return x .+ b.mlp(b.ln2(x))
end

struct GPT{E,P,B,N}
    tok_emb::E   # (C, vocab): one column per byte; also the output projection (tied)
    pos_emb::P   # (C, context)
    blocks::B
    ln_f::N
end
Flux.@layer GPT

function (m::GPT)(tokens)                # tokens: (T, B) 1-based byte ids
    T = size(tokens, 1)
    x = m.tok_emb(tokens) .+ m.pos_emb.weight[:, 1:T]  # (C, T, B) .+ the first T positions' columns (C, T)
    h = m.ln_f(m.blocks(x))
    logits = transpose(m.tok_emb.weight) * reshape(h, size(h, 1), :)   # (vocab, T*B): tied, no bias
    return reshape(logits, :, T, size(h, 3))           # (vocab, T, B)
end

normal(std) = (dims...) -> Float32(std) .* randn(Float32, dims...)

function model(spec, p)
    C, H = spec["width"], spec["heads"]
    init, residual = normal(spec["init_std"]), normal(spec["residual_std"])   # residual: the two projections into the stream
    block() = Block(
        TorchLayerNorm(C, spec["ln_eps"]),
        MultiHeadAttention(H, Dense(C => C; init), Dense(C => C; init), Dense(C => C; init), Dropout(p),
                           Dense(C => C; init = residual)),
        Dropout(p),
        TorchLayerNorm(C, spec["ln_eps"]),
        Chain(fc = Dense(C => spec["mlp_width"], gelu_erf; init), proj = Dense(spec["mlp_width"] => C; init = residual),
              drop = Dropout(p)))
    return GPT(Embedding(spec["vocab"] => C; init), Embedding(spec["context"] => C; init),
               Chain([block() for _ in 1:spec["layers"]]...), TorchLayerNorm(C, spec["ln_eps"]))
end

# Flux's names for the canonical ones (flux/weights.py): attn.qkv is q_proj, k_proj, v_proj; attn.proj is out_proj.
dense(key, d) = [key * ".weight" => (d, :weight), key * ".bias" => (d, :bias)]

function table(m)
    out = Table(["tok_emb.weight" => (m.tok_emb, :weight), "pos_emb.weight" => (m.pos_emb, :weight)])
    for (i, b) in enumerate(m.blocks.layers)
        k = "blocks.$(i - 1)"
        append!(out, dense("$k.ln1", b.ln1))   # a LayerNorm's weight and bias
        for proj in (:q_proj, :k_proj, :v_proj, :out_proj)
            append!(out, dense("$k.attn.$proj", getfield(b.attn, proj)))
        end
        append!(out, dense("$k.ln2", b.ln2), dense("$k.mlp.fc", b.mlp.layers.fc), dense("$k.mlp.proj", b.mlp.layers.proj))
    end
    return append!(out, dense("ln_f", m.ln_f))
end

"""The canonical key a native one holds (a part of it): q/k/v_proj are rows of attn.qkv, out_proj is attn.proj."""
canonical(key) = replace(key, r"attn\.[qkv]_proj" => "attn.qkv", "attn.out_proj" => "attn.proj")

function build(; spec, seed, dropout, device)
    Random.seed!(seed)   # initialisers and Dropout (on the CPU) draw from the default RNG
    decays = Set(w["key"] for w in spec["weights"] if w["decay"])   # AdamW's first group: matrices and embeddings
    decayed(tab) = [getfield(slot...) for (key, slot) in tab if canonical(key) in decays]
    attention = "Flux.MultiHeadAttention (NNlib.dot_product_attention: explicit softmax(QK^T)V, causal mask)"
    return Trainer(model(spec, dropout ? spec["dropout"] : zero(spec["dropout"])), table, spec; device, seed, decayed,
                   fast_path = Dict{String,Any}("attention" => attention, "gelu" => "NNlib.gelu_erf (exact)"))
end

end # module
