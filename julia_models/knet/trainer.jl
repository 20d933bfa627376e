# The Knet 1.4.10 training loop shared by the three Knet models: the harness protocol in Knet.
# Included into DLRosetta by DLRosetta.load. Knet models are plain Julia functions over
# `Param`s; AutoGrad's @diff records the tape, and each Param carries its own optimiser.
#
# Knet 1.4.10 (2022) is Knet's last release and requires CUDA.jl 1-3; whether that stack
# loads on the Julia >= 1.10 that juliacall needs is unproven (julia_models/README.md).
module KnetTrainer

using Knet: Knet, @diff, Adam, KnetArray, Momentum, Param, grad, nll, update!, value
import ..DLRosetta: fit_data!, train_epoch!, predict, param_count, weight_keys, get_weight, set_weight!, info
using ..DLRosetta: batch_indices, eval_batches, host_array, lastdim, synchronize

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
    model::F                # x -> scores (classes, B)
    prepare::P              # host batch (last dim B) -> the model's input
    params::Vector{Param}
    table::Table
    eval_batch::Int         # spec["eval_batch"]
    info::Dict{String,Any}
    x::Any                  # training inputs: the harness's memory (read-only), zero-copy
    y::Vector{Int}          # 1-based labels
    source::Any             # the PyArray x aliases; kept alive with the trainer
end

# Knet's Momentum keeps v = γv - ηg, w += v: PyTorch's SGD with a constant learning rate.
# Its Adam puts eps outside the square root of the bias-corrected moment, as PyTorch does.
function optimiser(opt::AbstractDict)
    opt["name"] == "sgd" && return Momentum(lr = opt["lr"], gamma = opt["momentum"])
    opt["name"] == "adam" && return Adam(lr = opt["lr"], beta1 = opt["beta1"], beta2 = opt["beta2"], eps = opt["eps"])
    error("optimizer $(repr(opt["name"])): Knet trainer knows sgd, adam")
end

function Trainer(model, prepare, params, table, spec::AbstractDict; device, fast_path = Dict{String,Any}(),
                 deviations = String[])
    for p in params
        p.opt = optimiser(spec["optimizer"])
    end
    path = Dict{String,Any}("device" => device, "array_type" => string(arraytype(device)),
                            "cudnn" => device == "cuda", "data_on_device" => false,
                            "julia_threads" => Threads.nthreads(),
                            # AutoGrad's @diff accepts only a scalar (Number) result (AutoGrad src/core.jl:
                            # "Only scalar valued functions supported"), so Knet's loss reaches the host
                            # at every step; on the GPU that is a synchronisation per step.
                            "loss_readback" => "per step (AutoGrad needs a scalar loss)")
    info = Dict{String,Any}("fast_path" => merge(path, fast_path), "deviations" => collect(String, deviations))
    return Trainer(model, prepare, collect(Param, params), Table(table), spec["eval_batch"], info,
                   nothing, Int[], nothing)
end

function fit_data!(t::Trainer, x::AbstractArray, y::AbstractVector)
    t.source = x
    t.x = host_array(x)     # Knet's idiom: batches are gathered on the host, then sent to the device
    t.y = Vector{Int}(y)
    return nothing
end

function train_epoch!(t::Trainer, plan::AbstractMatrix)
    losses = Vector{Float32}(undef, size(plan, 2))
    for j in axes(plan, 2)
        idx = batch_indices(plan, j)
        x = t.prepare(lastdim(t.x, idx))
        J = @diff nll(t.model(x), t.y[idx])   # mean softmax cross-entropy; dropout is on inside @diff
        for p in t.params
            update!(p, grad(J, p))
        end
        losses[j] = value(J)                  # already a host number (see "loss_readback")
    end
    synchronize()
    return losses
end

function predict(t::Trainer, x::AbstractArray)
    xs = host_array(x)
    n = size(xs, ndims(xs))
    out = Matrix{Float32}(undef, 0, 0)
    for r in eval_batches(n, t.eval_batch)
        scores = Array{Float32}(Array(value(t.model(t.prepare(lastdim(xs, r))))))
        out = isempty(out) ? similar(scores, size(scores, 1), n) : out
        out[:, r] = scores
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

end # module
