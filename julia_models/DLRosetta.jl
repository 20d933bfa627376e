# The harness protocol on the Julia side (harness/protocol.py), shared by Flux and Knet.
#
# harness/runtimes/julia.py includes this file into Main through juliacall, then calls
# `DLRosetta.load(framework, model)` and the model module's `build`. Every array arrives
# zero-copy from numpy, already in Julia's order: harness/julia_layout.py is the one place
# that turns C-order (N,3,32,32) images into column-major (32,32,3,N) = WHCN, and that shifts
# labels, token ids and batch indices to 1-based.
module DLRosetta

using SHA: sha256

# The protocol: each framework's trainer (flux/trainer.jl, knet/trainer.jl) adds methods.
function fit_data! end      # (t, x, y) untimed; x WHCN Float32 (or (150, N) Int64 ids), y 1-based
function train_epoch! end   # (t, plan) -> Vector{Float32}, one step per column of plan
function predict end        # (t, x) -> (classes, N) Float32 logits, eval mode, host memory
function param_count end    # (t) -> trainable parameters, counted by the framework
function weight_keys end    # (t) -> the Julia-side weight keys (julia_layout.native_keys)
function get_weight end     # (t, key) -> host copy of one weight, in Julia's layout
function set_weight! end    # (t, key, a) -> copy `a` (Julia's layout) into the model
function info end           # (t) -> Dict("fast_path" => Dict, "deviations" => Vector{String})

const EVAL_BATCH = 256
const MODULES = Dict("cnn" => "CNN", "resnet50" => "ResNet50", "rnn" => "RNN")

# Set by the Python runtime once CUDA is loaded (CUDA.synchronize); a no-op on the CPU.
const DEVICE_SYNC = Ref{Function}(() -> nothing)
synchronize() = DEVICE_SYNC[]()

"""Name of the module that `<framework>/<model>.jl` defines, e.g. `FluxCNN`."""
modulename(framework::AbstractString, model::AbstractString) =
    uppercasefirst(framework) * MODULES[model]

"""Include `<framework>/trainer.jl` and `<framework>/<model>.jl` into DLRosetta (once each).

Returns nothing: the caller looks the module up in a later call, so that the new definitions
are visible (Julia's world age)."""
function load(framework::AbstractString, model::AbstractString)
    trainer = Symbol(uppercasefirst(framework), "Trainer")
    isdefined(DLRosetta, trainer) || Base.include(DLRosetta, joinpath(@__DIR__, framework, "trainer.jl"))
    isdefined(DLRosetta, Symbol(modulename(framework, model))) ||
        Base.include(DLRosetta, joinpath(@__DIR__, framework, model * ".jl"))
    return nothing
end

"""A Julia `Array` over the same memory as a column-major array from numpy (no copy).

The caller keeps `a` (a PythonCall.PyArray, which holds the numpy object) alive."""
function host_array(a::AbstractArray{T,N}) where {T,N}
    a isa Array && return a
    dense = (1, cumprod(collect(size(a)))[1:end-1]...)
    Tuple(strides(a)) == dense ||
        error("expected a column-major (Fortran-order) array, got strides $(strides(a)) for size $(size(a))")
    return unsafe_wrap(Array, pointer(a), size(a))
end

"""SHA-256 (hex) of the bytes of a contiguous array, as Julia sees them in memory."""
function digest(a::AbstractArray)
    GC.@preserve a begin
        bytes = unsafe_wrap(Array, Ptr{UInt8}(pointer(a)), length(a) * sizeof(eltype(a)))
        return bytes2hex(sha256(bytes))
    end
end

"""Row `j` of the epoch plan: the 1-based example indices of step `j` (a column, (B,))."""
batch_indices(plan::AbstractMatrix, j::Integer) = collect(Int, view(plan, :, j))

"""Eval batches over the last dimension of x: ranges of at most EVAL_BATCH examples."""
eval_batches(n::Integer) = (i:min(i + EVAL_BATCH - 1, n) for i in 1:EVAL_BATCH:n)

"""The last dimension of x, selected (a copy: the gathered batch)."""
lastdim(x::AbstractArray{T,N}, idx) where {T,N} = x[ntuple(_ -> Colon(), N - 1)..., idx]

end # module
