# The Flux 0.16 training loop shared by the three Flux models: the harness protocol in Flux.
# Included into DLRosetta by DLRosetta.load; the model files build a `Trainer`.
module FluxTrainer

using Flux: Flux, Adam, CUDADevice, Momentum, cpu_device, gpu_device
import ..DLRosetta: fit_data!, train_epoch!, predict, param_count, weight_keys, get_weight, set_weight!, info
using ..DLRosetta: batch_indices, eval_batches, host_array, lastdim, synchronize

# Where each weight lives: key => (layer, field). Fields rather than arrays, so that a layer
# which replaces an array (BatchNorm's running statistics) is still read and written correctly.
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
    info::Dict{String,Any}
    x::Any             # training inputs on the device: WHCN Float32, or (150, N) 1-based token ids
    y::Vector{Int}     # 1-based labels, host memory
    source::Any        # the PyArray that x may alias (CPU): kept alive with the trainer
end

function pick_device(name::AbstractString)
    name == "cpu" && return cpu_device()
    dev = gpu_device()
    dev isa CUDADevice ||
        error("--device cuda: Flux found no functional CUDA device (CUDA.jl and cuDNN.jl are loaded by the runtime)")
    return dev
end

# Optimisers.jl's Momentum keeps v = ρv + ηg, x -= v: PyTorch's SGD with a constant learning
# rate. Its Adam puts ϵ outside the square root with bias correction, as PyTorch does.
rule(optimizer, lr, momentum, beta1, beta2, eps) =
    optimizer == "sgd" ? Momentum(lr, momentum) : Adam(lr, (beta1, beta2), eps)

function Trainer(model, table, classes; device, optimizer, lr, momentum = 0.0, beta1 = 0.9,
                 beta2 = 0.999, eps = 1e-8, fast_path = Dict{String,Any}(), deviations = String[])
    dev = pick_device(device)
    model = dev(model)
    state = Flux.setup(rule(optimizer, lr, momentum, beta1, beta2, eps), model)
    path = Dict{String,Any}("device" => device, "cudnn" => device == "cuda", "data_on_device" => true,
                            "autodiff" => "Zygote", "julia_threads" => Threads.nthreads())
    info = Dict{String,Any}("fast_path" => merge(path, fast_path), "deviations" => collect(String, deviations))
    return Trainer(model, state, dev, table(model), classes, info, nothing, Int[], nothing)
end

function fit_data!(t::Trainer, x::AbstractArray, y::AbstractVector)
    t.source = x
    t.x = t.device(host_array(x))   # CPU: numpy's memory itself; GPU: one copy, before the clock
    t.y = Vector{Int}(y)
    return nothing
end

function train_epoch!(t::Trainer, plan::AbstractMatrix)
    losses = Vector{Float32}(undef, size(plan, 2))
    for j in axes(plan, 2)
        idx = batch_indices(plan, j)
        x = lastdim(t.x, idx)
        y = t.device(Flux.onehotbatch(t.y[idx], t.classes))
        # Dropout and BatchNorm are in training mode inside the gradient, eval mode outside it.
        loss, grads = Flux.withgradient(m -> Flux.logitcrossentropy(m(x), y), t.model)
        Flux.update!(t.state, t.model, grads[1])
        losses[j] = loss
    end
    synchronize()
    return losses
end

function predict(t::Trainer, x::AbstractArray)
    xs = host_array(x)
    n = size(xs, ndims(xs))
    out = Matrix{Float32}(undef, length(t.classes), n)
    for r in eval_batches(n)
        out[:, r] = cpu_device()(t.model(t.device(lastdim(xs, r))))
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

end # module
