# The Knet 1.4.10 training loop shared by the three Knet models: the harness protocol in Knet.
# Included into DLRosetta by DLRosetta.load. Knet models are plain Julia functions over
# `Param`s; AutoGrad's @diff records the tape, and each Param carries its own optimiser.
#
# Knet 1.4.10 (2022) is Knet's last release and requires CUDA.jl 1-3; whether that stack
# loads on the Julia >= 1.10 that juliacall needs is unproven (julia_models/README.md).
module KnetTrainer

using Knet: Knet, @diff, Adam, KnetArray, Momentum, Param, grad, nll, update!, value
using LinearAlgebra: BLAS
import ..DLRosetta: fit_data!, train_epoch!, predict, param_count, weight_keys, get_weight, set_weight!, info, matmul!
using ..DLRosetta: batch_indices, eval_batches, host_array, lastdim, setlastdim!, synchronize

# Where each weight lives, in Knet's own layout: key => (holder, field), e.g. (param, :value)
# or (bnmoments, :var); julia_models/knet/weights.py maps these keys to the canonical ones.
const Table = Vector{Pair{String,Tuple{Any,Symbol}}}

"""The array type of the model: KnetArray on the GPU (cuDNN kernels), Array on the CPU."""
function arraytype(device::AbstractString)
    device == "cpu" && return Array{Float32}
    Knet.CUDA.functional() ||
        error("--device cuda: Knet found no functional CUDA device; `using Knet; Knet.CUDA.functional(true)` ",
              "in this environment prints why")
    return KnetArray{Float32}
end

# Seeding: the models call Knet.seed!(seed), which seeds Random's task-local RNG (initialisers,
# CPU dropout) and, when CUDA is functional, CUDA.seed! (GPU dropout: Knet's rand! on a KnetArray
# fills it through a CuArray). Knet 1.4.x: `seed!(n) = (CUDA.functional() && CUDA.seed!(n); Random.seed!(n))`.

mutable struct Trainer{F,P}
    model::F                # x -> scores (classes, B), or (vocab, T, B)
    prepare::P              # host batch (last dim B) -> the model's input
    params::Vector{Param}
    kept::Vector{Float32}   # per Param: 1 - lr*weight_decay (AdamW's decayed tensors) or 1
    clip::Any               # (clip_norm, clip_eps) of global gradient-norm clipping, or nothing
    table::Table
    eval_batch::Int         # spec["eval_batch"]
    info::Dict{String,Any}
    x::Any                  # training inputs: the harness's memory (read-only), zero-copy
    y::Array{Int}           # 1-based labels (N,), or a next-token model's targets (T, N)
    source::Any             # the PyArray x aliases; kept alive with the trainer
end

# Knet's Momentum keeps v = γv - ηg, w += v: PyTorch's SGD with a constant learning rate.
# Its Adam puts eps outside the square root of the bias-corrected moment, as PyTorch does.
# AdamW: Knet 1.4 has no weight decay and only per-Param clipping (gclip), so the spec's AdamW is
# Knet's Adam step after w .*= 1 - lr*weight_decay on the decayed Params (decoupled: Adam's step
# does not read w, so this is PyTorch's w - lr*wd*w - lr*m̂/(sqrt(v̂)+eps)), and the clipping is
# global, in torch.nn.utils.clip_grad_norm_'s form (clip_global_norm below).
function optimiser(opt::AbstractDict)
    opt["name"] == "sgd" && return Momentum(lr = opt["lr"], gamma = opt["momentum"])
    opt["name"] in ("adam", "adamw") &&
        return Adam(lr = opt["lr"], beta1 = opt["beta1"], beta2 = opt["beta2"], eps = opt["eps"])
    error("optimizer $(repr(opt["name"])): Knet trainer knows sgd, adam, adamw")
end

"""Every gradient times min(1, clip_norm / (norm + clip_eps)), norm over all of them together."""
function clip_global_norm(grads, (clip_norm, clip_eps))
    total = sqrt(sum(g -> sum(abs2, g), grads; init = 0f0))
    factor = Float32(min(1, clip_norm / (total + clip_eps)))
    return [g .* factor for g in grads]
end

function Trainer(model, prepare, params, table, spec::AbstractDict; device, fast_path = Dict{String,Any}(),
                 deviations = String[], decays = falses(length(params)))
    opt = spec["optimizer"]
    for p in params
        p.opt = optimiser(opt)
    end
    # decays[i]: Param i is one of the spec's decayed tensors (Weight.decay; only AdamW decays)
    kept = [opt["name"] == "adamw" && d ? Float32(1 - opt["lr"] * opt["weight_decay"]) : 1f0 for d in decays]
    clip = opt["clip_norm"] === nothing ? nothing : (opt["clip_norm"], opt["clip_eps"])
    path = Dict{String,Any}("device" => device, "array_type" => string(arraytype(device)),
                            "cudnn" => device == "cuda", "data_on_device" => false,
                            "julia_threads" => Threads.nthreads(),
                            # AutoGrad's @diff accepts only a scalar (Number) result (AutoGrad src/core.jl:
                            # "Only scalar valued functions supported"), so Knet's loss reaches the host
                            # at every step; on the GPU that is a synchronisation per step.
                            "loss_readback" => "per step (AutoGrad needs a scalar loss)")
    info = Dict{String,Any}("fast_path" => merge(path, fast_path), "deviations" => collect(String, deviations),
                            "threads" => BLAS.get_num_threads())   # the matmul peak's (BLAS) threads
    return Trainer(model, prepare, collect(Param, params), kept, clip, Table(table), spec["eval_batch"], info,
                   nothing, Int[], nothing)
end

function fit_data!(t::Trainer, x::AbstractArray, y::AbstractArray)
    t.source = x
    t.x = host_array(x)     # Knet's idiom: batches are gathered on the host, then sent to the device
    t.y = Array{Int}(y)
    return nothing
end

function train_epoch!(t::Trainer, plan::AbstractMatrix)
    losses = Vector{Float32}(undef, size(plan, 2))
    for j in axes(plan, 2)
        idx = batch_indices(plan, j)
        x = t.prepare(lastdim(t.x, idx))
        # mean softmax cross-entropy over every prediction (nll: scores (classes, ...) with labels of
        # the remaining shape); dropout is on inside @diff
        J = @diff nll(t.model(x), lastdim(t.y, idx))
        grads = [grad(J, p) for p in t.params]
        # full: an indexed Param's (embedding's) gradient is an AutoGrad Sparse, summed into an array
        t.clip === nothing || (grads = clip_global_norm(map(Knet.AutoGrad.full, grads), t.clip))
        for (p, g, kept) in zip(t.params, grads, t.kept)
            kept == 1 || (value(p) .*= kept)   # AdamW's decoupled decay, from the same w as the step
            update!(p, g)
        end
        losses[j] = value(J)                  # already a host number (see "loss_readback")
    end
    synchronize()
    return losses
end

function predict(t::Trainer, x::AbstractArray)
    xs = host_array(x)
    n = size(xs, ndims(xs))
    out = Matrix{Float32}(undef, 0, 0)   # (classes, N), or (vocab, T, N)
    for r in eval_batches(n, t.eval_batch)
        scores = Array{Float32}(Array(value(t.model(t.prepare(lastdim(xs, r))))))
        out = isempty(out) ? similar(scores, size(scores)[1:end-1]..., n) : out
        setlastdim!(out, r, scores)
    end
    synchronize()
    return out
end

param_count(t::Trainer) = sum(p -> length(value(p)), t.params)

weight_keys(t::Trainer) = first.(t.table)

function slot(t::Trainer, key::AbstractString)
    i = findfirst(p -> p.first == key, t.table)
    i === nothing && error("no weight $(repr(key)) in this Knet model")
    return t.table[i].second
end

get_weight(t::Trainer, key::AbstractString) = Array{Float32}(Array(getfield(slot(t, key)...)))

function set_weight!(t::Trainer, key::AbstractString, a::AbstractArray)
    dest = getfield(slot(t, key)...)
    size(dest) == size(a) || error("$key: the Knet model holds $(size(dest)), got $(size(a))")
    copyto!(dest, Array{Float32}(a))
    return nothing
end

info(t::Trainer) = t.info

const PEAK_OPERANDS = Dict{Any,Any}()   # (n, array type) -> the two n×n operands of the matmul peak

function matmul!(t::Trainer, n::Integer)
    w = value(first(t.params))         # an Array or a KnetArray: the model's array type
    a, b = get!(PEAK_OPERANDS, (n, typeof(w))) do
        (copyto!(similar(w, n, n), randn(Float32, n, n)), copyto!(similar(w, n, n), randn(Float32, n, n)))
    end
    a * b          # BLAS on the CPU (returns when done), CUBLAS on the GPU
    synchronize()
    return nothing
end

end # module
