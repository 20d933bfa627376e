# The character-level GPT in Knet 1.4.10 (spec: harness/specs.py, TRANSFORMER; every size below is read from it).
#
# Knet has no attention or LayerNorm layer: the model is plain Julia over Params, as Knet's own
# transformer examples write it. Windows arrive as (T, N) 1-based byte ids; activations are
# (C, T, B). Attention is explicit: softmax(k^T q / sqrt(head width)) over keys with a causal
# mask, then v * probabilities, each a Knet.bmm over the (heads × B) stacked matrices. The exact
# GELU is built from SpecialFunctions.erf (AutoGrad has its derivative), LayerNorm in PyTorch's
# form from mean; q, k, v stay packed as one (3C, C) Param as PyTorch packs them. The logits are
# the token table's transpose times the last LayerNorm's output (tied).
module KnetTransformer

using Knet: Knet, Param, bmm, dropout, param, param0, softmax
using SpecialFunctions: erf
using Statistics: mean
using ..KnetTrainer: Trainer, arraytype

gelu(x) = x .* (1 .+ erf.(x ./ sqrt(2f0))) ./ 2           # x Φ(x), exact

function layernorm(x, w, b, eps)                          # over the first (feature) dimension
    μ = mean(x; dims = 1)
    σ² = mean(abs2.(x .- μ); dims = 1)                    # biased variance, as PyTorch's
    return (x .- μ) ./ sqrt.(σ² .+ eps) .* w .+ b
end

struct GPT
    w::Dict{String,Any}    # Params, keyed like the canonical file (tok_emb/pos_emb as (C, vocab/context))
    heads::Int
    eps::Float32           # LayerNorm's
    p::Float64             # dropout rate
    layers::Int
    atype::Type            # Array{Float32} or KnetArray{Float32}: where the causal mask is made
end

linear(m, k, x) = m.w[k * ".weight"] * x .+ m.w[k * ".bias"]            # x: (in, rows)

"""Swap the 2nd and 3rd of four dimensions: (D, H, T, B) <-> (D, T, H, B)."""
swap23(x) = permutedims(x, (1, 3, 2, ndims(x)))

"""(D*heads, T*B) -> (D, T, heads*B): one T-column matrix per head and window."""
split_heads(x, D, H, T, B) = reshape(swap23(reshape(x, D, H, T, B)), D, T, H * B)

function attention(m, k, h, T, B)                         # h: (C, T*B)
    C = size(h, 1)
    H = m.heads
    D = C ÷ H
    qkv = linear(m, k * ".qkv", h)                        # (3C, T*B): q, k, v rows, each head after head
    q, key, v = (split_heads(qkv[(i * C + 1):((i + 1) * C), :], D, H, T, B) for i in 0:2)
    scores = bmm(key, q; transA = true) ./ sqrt(Float32(D))            # (T key, T query, heads*B)
    future = m.atype([i > j ? typemin(Float32) : 0f0 for i in 1:T, j in 1:T])   # key after query: -Inf
    probs = dropout(softmax(scores .+ future; dims = 1), m.p)           # over keys
    y = bmm(v, probs)                                     # (D, T, heads*B)
    y = reshape(swap23(reshape(y, D, T, H, B)), C, T * B)   # heads side by side again
    return dropout(linear(m, k * ".proj", y), m.p)
end

mlp(m, k, h) = dropout(linear(m, k * ".proj", gelu(linear(m, k * ".fc", h))), m.p)

function (m::GPT)(tokens)                                 # tokens: (T, B) 1-based byte ids
    T, B = size(tokens)
    w = m.w
    x = w["tok_emb.weight"][:, tokens] .+ w["pos_emb.weight"][:, 1:T]  # (C, T, B)
    C = size(x, 1)
    x = reshape(x, C, T * B)
    for i in 0:(m.layers - 1)
        k = "blocks.$i"
        # pre-LayerNorm: the residual stream itself is never normalised
        x = x .+ attention(m, k * ".attn", layernorm(x, w[k * ".ln1.weight"], w[k * ".ln1.bias"], m.eps), T, B)
        x = x .+ mlp(m, k * ".mlp", layernorm(x, w[k * ".ln2.weight"], w[k * ".ln2.bias"], m.eps))
    end
    h = layernorm(x, w["ln_f.weight"], w["ln_f.bias"], m.eps)
    return reshape(permutedims(w["tok_emb.weight"], (2, 1)) * h, :, T, B)   # (vocab, T, B): tied, no bias
end

function build(; spec, seed, dropout, device)
    Knet.seed!(seed)
    atype = arraytype(device)
    normal(std) = (d...) -> Float32(std) .* randn(Float32, d...)
    w = Dict{String,Any}()
    for s in spec["weights"]                              # the canonical table, in its order
        key, shape = s["key"], s["shape"]
        if s["init"] == "ones"
            w[key] = Param(atype(ones(Float32, shape...)))
        elseif s["init"] == "zeros"
            w[key] = param0(shape...; atype)
        else   # normal(0, std): init_std, or residual_std for attn.proj and mlp.proj (the spec's families)
            std = endswith(key, r"(attn|mlp)\.proj\.weight") ? spec["residual_std"] : spec["init_std"]
            dims = key in ("tok_emb.weight", "pos_emb.weight") ? reverse(shape) : shape   # tables: (C, vocab)
            w[key] = param(dims...; init = normal(std), atype)
        end
    end
    keys = [s["key"] for s in spec["weights"]]
    params = [w[k] for k in keys]
    decays = [s["decay"] for s in spec["weights"]]        # AdamW's first group: matrices and embeddings
    model = GPT(w, spec["heads"], spec["ln_eps"], dropout ? spec["dropout"] : zero(spec["dropout"]), spec["layers"], atype)
    table = [k => (w[k], :value) for k in keys]
    path = Dict{String,Any}("attention" => "explicit softmax(QK^T)V: Knet.bmm over heads x windows, causal mask added",
                            "gelu" => "x Φ(x) with SpecialFunctions.erf (exact)")
    return Trainer(model, identity, params, table, spec; device, decays, fast_path = path)
end

end # module
