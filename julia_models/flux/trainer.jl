# The Flux 0.16 training loop shared by the three Flux models: the harness protocol in Flux.
# Included into DLRosetta by DLRosetta.load; the model files build a `Trainer` from the spec.
module FluxTrainer

using Flux: Flux, Adam, AdamW, CPUDevice, CUDADevice, Momentum, cpu_device, default_device_rng, gpu_device
using LinearAlgebra: BLAS
using Random: Random
using Statistics: mean
import ..DLRosetta: fit_data!, train_epoch!, predict, param_count, weight_keys, get_weight, set_weight!, info, matmul!
using ..DLRosetta: batch_indices, cuda_problem, eval_batches, host_array, lastdim, setlastdim!, synchronize

# Where each weight lives: key => (layer, field). Fields rather than arrays, so that a weight is
# found wherever the layer keeps it; Flux <= 0.16.10's BatchNorm updates its running statistics
# μ and σ² in place, so those arrays stay the layer's own.
const Table = Vector{Pair{String,Tuple{Any,Symbol}}}

conv_or_dense(key, layer) = [key * ".weight" => (layer, :weight), key * ".bias" => (layer, :bias)]
batchnorm(key, layer) = [key * ".weight" => (layer, :γ), key * ".bias" => (layer, :β),
                         key * ".running_mean" => (layer, :μ), key * ".running_var" => (layer, :σ²)]

mutable struct Trainer{M,S,D}
    model::M
    state::S           # Optimisers.jl state tree (momentum / Adam moments)
    device::D          # cpu_device() or a CUDADevice
    table::Table
    classes::UnitRange{Int}
    eval_batch::Int    # spec["eval_batch"]: examples per eval-mode forward pass
    clip::Any          # (clip_norm, clip_eps) of global gradient-norm clipping, or nothing
    info::Dict{String,Any}
    x::Any             # training inputs: the harness's memory (CPU, read-only) or one device copy
    y::Array{Int}      # 1-based labels (N,), or a next-token model's targets (T, N); host memory
    source::Any        # the PyArray that x may alias (CPU): kept alive with the trainer
end

function pick_device(name::AbstractString)
    name == "cpu" && return cpu_device()
    dev = gpu_device()
    dev isa CUDADevice || error("--device cuda: Flux found no functional CUDA device: ",
                                something(cuda_problem(), "CUDA.jl is functional, but MLDataDevices chose $dev"))
    return dev
end

# Optimisers.jl's Momentum keeps v = ρv + ηg, x -= v: PyTorch's SGD with a constant learning
# rate. Its Adam puts ϵ outside the square root with bias correction, as PyTorch does; its AdamW
# (couple = true, Optimisers 0.4's default) is x -= η (Adam's step + λx): PyTorch's AdamW.
function rule(opt::AbstractDict)
    opt["name"] == "sgd" && return Momentum(opt["lr"], opt["momentum"])
    opt["name"] == "adam" && return Adam(opt["lr"], (opt["beta1"], opt["beta2"]), opt["eps"])
    opt["name"] == "adamw" && return AdamW(opt["lr"], (opt["beta1"], opt["beta2"]), opt["weight_decay"], opt["eps"])
    error("optimizer $(repr(opt["name"])): Flux trainer knows sgd, adam, adamw")
end

"""AdamW's decay groups: the state tree mirrors the model (a NamedTuple per layer, a Tuple per
Chain), one Leaf per trainable array; every Leaf whose array is not in `decayed` (biases,
LayerNorm) gets λ = 0."""
function exclude_from_decay!(state, model, decayed)
    if state isa Flux.Optimisers.Leaf
        any(a -> a === model, decayed) || Flux.Optimisers.adjust!(state; lambda = 0)
    elseif state isa Union{Tuple,NamedTuple}
        for k in keys(state)
            exclude_from_decay!(state[k], model isa Tuple ? model[k] : getfield(model, k), decayed)
        end
    end
    return nothing
end

"""Every gradient array of a structural (nested NamedTuple / Tuple) Zygote gradient."""
gradient_arrays(g::AbstractArray{<:Number}) = Any[g]
gradient_arrays(g::Union{Tuple,NamedTuple}) = reduce(vcat, map(gradient_arrays, values(g)); init = Any[])
gradient_arrays(_) = Any[]

"""Global gradient-norm clipping in torch.nn.utils.clip_grad_norm_'s form: one norm over every
gradient array, each multiplied by min(1, clip_norm / (norm + clip_eps)). Flux has only per-array
clipping (Optimisers' ClipNorm), so the global form is written here."""
function clip_global_norm!(grads, (clip_norm, clip_eps))
    arrays = gradient_arrays(grads)
    total = sqrt(sum(g -> sum(abs2, g), arrays; init = 0f0))
    factor = Float32(min(1, clip_norm / (total + clip_eps)))
    foreach(g -> g .*= factor, arrays)
    return nothing
end

function Trainer(model, table, spec::AbstractDict; device, seed, fast_path = Dict{String,Any}(),
                 deviations = String[], decayed = nothing)
    dev = pick_device(device)
    model = dev(model)
    # On the GPU, Dropout draws from CUDA's default RNG (MLDataDevices adapts the task-local RNG
    # to CUDA.default_rng()), which Random.seed!(seed) does not touch: seed it too.
    dev isa CPUDevice || Random.seed!(default_device_rng(dev), seed)
    opt = spec["optimizer"]
    state = Flux.setup(rule(opt), model)
    tab = table(model)::Table
    # decayed(tab): the arrays the spec decays (Weight.decay), taken after the move to the device
    decayed === nothing || exclude_from_decay!(state, model, decayed(tab))
    clip = opt["clip_norm"] === nothing ? nothing : (opt["clip_norm"], opt["clip_eps"])
    path = Dict{String,Any}("device" => device, "cudnn" => device == "cuda", "data_on_device" => true,
                            "autodiff" => "Zygote", "julia_threads" => Threads.nthreads(),
                            "loss_readback" => "once per epoch (losses stay on the device)")
    # the global norm is a host number (sum(abs2, g) reads back), one synchronisation per step on the GPU
    clip === nothing || (path["grad_clip"] = "global norm, clip_grad_norm_'s form; the norm read to the host per step")
    info = Dict{String,Any}("fast_path" => merge(path, fast_path), "deviations" => collect(String, deviations),
                            "threads" => BLAS.get_num_threads())   # the matmul peak's (BLAS) threads
    return Trainer(model, state, dev, tab, 1:spec["num_classes"], spec["eval_batch"], clip, info,
                   nothing, Int[], nothing)
end

function fit_data!(t::Trainer, x::AbstractArray, y::AbstractArray)
    t.source = x
    xs = host_array(x)
    # CPU: numpy's memory itself (read-only); GPU: one copy to the device, before the clock.
    t.x = t.device isa CPUDevice ? xs : t.device(parent(xs))
    t.y = Array{Int}(y)
    return nothing
end

# Mean softmax cross-entropy over every prediction, kept as a (1, 1) array: a scalar would be
# read back to the host (a synchronisation) at every step. The predictions are the columns: a
# classifier's (classes, B), a next-token model's (vocab, T, B) logits as (vocab, T*B), with the
# one-hot targets of vec(y) in the same order.
batch_loss(logits, y) = Flux.logitcrossentropy(reshape(logits, size(logits, 1), :), y; agg = l -> mean(l; dims = 2))

function train_epoch!(t::Trainer, plan::AbstractMatrix)
    steps = size(plan, 2)
    losses = t.device(zeros(Float32, steps))   # on the device, like the model; read once at the end
    for j in 1:steps
        idx = batch_indices(plan, j)
        x = lastdim(t.x, idx)
        y = t.device(Flux.onehotbatch(vec(lastdim(t.y, idx)), t.classes))
        # Dropout and BatchNorm are in training mode inside the pullback, eval mode outside it.
        loss, back = Flux.pullback(m -> batch_loss(m(x), y), t.model)
        grads = back(one.(loss))
        t.clip === nothing || clip_global_norm!(grads[1], t.clip)
        Flux.update!(t.state, t.model, grads[1])
        copyto!(losses, j, loss, 1, 1)          # device to device: no synchronisation
    end
    out = Array(losses)                          # the epoch's one device-to-host copy
    synchronize()
    return out
end

function predict(t::Trainer, x::AbstractArray)
    xs = host_array(x)
    n = size(xs, ndims(xs))
    out = Matrix{Float32}(undef, length(t.classes), 0)   # (classes, N), or (vocab, T, N) once the first batch shows
    for r in eval_batches(n, t.eval_batch)
        logits = cpu_device()(t.model(t.device(lastdim(xs, r))))
        isempty(out) && (out = similar(logits, size(logits)[1:end-1]..., n))
        setlastdim!(out, r, logits)
    end
    synchronize()
    return out
end

param_count(t::Trainer) = sum(length, Flux.trainables(t.model))

weight_keys(t::Trainer) = first.(t.table)

function slot(t::Trainer, key::AbstractString)
    i = findfirst(p -> p.first == key, t.table)
    i === nothing && error("no weight $(repr(key)) in this Flux model")
    return t.table[i].second
end

get_weight(t::Trainer, key::AbstractString) = Array{Float32}(cpu_device()(getfield(slot(t, key)...)))

function set_weight!(t::Trainer, key::AbstractString, a::AbstractArray)
    dest = getfield(slot(t, key)...)
    size(dest) == size(a) || error("$key: the Flux model holds $(size(dest)), got $(size(a))")
    copyto!(dest, Array{Float32}(a))
    return nothing
end

info(t::Trainer) = t.info

const PEAK_OPERANDS = Dict{Any,Any}()   # (n, device) -> the two n×n operands of the matmul peak

function matmul!(t::Trainer, n::Integer)
    a, b = get!(() -> (t.device(randn(Float32, n, n)), t.device(randn(Float32, n, n))), PEAK_OPERANDS,
                (n, typeof(t.device)))
    a * b          # BLAS on the CPU (returns when done), CUBLAS on the GPU
    synchronize()
    return nothing
end

# Flux's exporter: ONNXNaiveNASflux.save traces the model with probes and writes ONNX (it writes
# Conv, BatchNormalization, MaxPool, GlobalAveragePool, Gemm, ...; no GRU: the rnn fails with its
# message). `inshape` is Julia's input shape with :Batch for the batch dimension, e.g.
# (32, 32, 3, :Batch): WHCN, which the file holds as ONNX's NCHW. The package is loaded on first use
# (julia_models/README.md: it is not in env/juliapkg.json, whose UUIDs are verified against the registry).
function export_onnx(t::Trainer, path::AbstractString, inshape)
    ONNXNaiveNASflux = Base.require(Main, :ONNXNaiveNASflux)
    model = cpu_device()(t.model)
    Flux.testmode!(model)  # eval: BatchNorm's running statistics, no dropout
    try
        Base.invokelatest(ONNXNaiveNASflux.save, String(path), model, Tuple(inshape))
    finally
        Flux.trainmode!(model)
    end
    return "ONNXNaiveNASflux $(pkgversion(ONNXNaiveNASflux)), Flux $(pkgversion(Flux))"
end

end # module
