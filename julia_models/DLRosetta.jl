# The harness protocol on the Julia side (harness/protocol.py), shared by Flux and Knet.
#
# harness/runtimes/julia.py includes this file into Main through juliacall, calls
# `DLRosetta.load(framework, model)`, then `DLRosetta.build(module, spec; seed, dropout, device)`
# with the spec as plain data (harness.specs.ModelSpec.as_data). Every array arrives zero-copy
# from numpy, already in Julia's order: julia_models/handoff.py is the one place that turns
# C-order (N,3,32,32) images into column-major (32,32,3,N) = WHCN, and that shifts labels,
# token ids and batch indices to 1-based (OFFSET). The transformer's (N, T) windows and
# next-byte targets arrive as (T, N) 1-based ids, its logits leave as (vocab, T, N).
module DLRosetta

using SHA: sha256

# The protocol: each framework's trainer (flux/trainer.jl, knet/trainer.jl) adds methods.
function fit_data! end      # (t, x, y) untimed; x WHCN Float32 (or (maxlen, N) Int64 ids), y 1-based
function train_epoch! end   # (t, plan) -> Vector{Float32}, one step per column of plan
function predict end        # (t, x) -> (classes, N) Float32 logits, eval mode, host memory
function param_count end    # (t) -> trainable parameters, counted by the framework
function weight_keys end    # (t) -> the Julia-side weight keys (<framework>/weights.py: native_shapes)
function get_weight end     # (t, key) -> host copy of one weight, in Julia's layout
function set_weight! end    # (t, key, a) -> copy `a` (Julia's layout) into the model
function info end           # (t) -> Dict("fast_path" => Dict, "deviations" => Vector{String}, "threads" => Int)
function matmul! end        # (t, n) -> one n×n Float32 product on the trainer's device, waited for (the matmul peak)
function export_onnx end    # (t, path, inshape) -> exporter name; only frameworks with an ONNX exporter (Flux)

const OFFSET = 1   # Julia's first index: handoff.py adds it to labels, token ids and batch rows
const MODULES = Dict("cnn" => "CNN", "resnet50" => "ResNet50", "rnn" => "RNN", "transformer" => "Transformer")

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

# --------------------------------------------------------------------------- the spec
"""The spec as native Julia data. juliacall hands a Python dict over as a PyDict and a list as a
PyList (PythonCall's conversion to `Any`); this copies them into Dict{String,Any} and Vectors
(comprehensions narrow the element type: [50, 50, 100, 100] becomes a Vector{Int})."""
julia_data(d::AbstractDict) = Dict{String,Any}(String(k) => julia_data(v) for (k, v) in d)
julia_data(v::AbstractVector) = [julia_data(x) for x in v]
julia_data(s::AbstractString) = String(s)
julia_data(x) = x

"""Build a model module's trainer from the spec (the one generic path for every model):
`m.build(; spec, seed, dropout, device)`, spec as julia_data."""
build(m::Module, spec; seed, dropout, device) = m.build(; spec = julia_data(spec), seed, dropout, device)

"""The bounds of a weight's `uniform(lo,hi)` initialiser, read from the spec's weight table."""
function uniform_bounds(spec::AbstractDict, key::AbstractString)
    init = only(w["init"] for w in spec["weights"] if w["key"] == key)
    m = match(r"^uniform\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)$", init)
    m === nothing && error("$key: expected a uniform(lo,hi) initialiser in the spec, got $(repr(init))")
    return parse(Float32, m[1]), parse(Float32, m[2])
end

# --------------------------------------------------------------------------- arrays from numpy
"""Memory the harness owns (numpy arrays, the prepared data sets are read-only memory maps),
seen by Julia without a copy and never written: a write raises instead of faulting on a
read-only page. Reads go straight to the wrapped Array. (ReadOnlyArrays.jl does the same;
these few lines keep both environments, Knet's 2022 one included, free of another package.)"""
struct ReadOnly{T,N} <: AbstractArray{T,N}
    data::Array{T,N}
end
Base.size(a::ReadOnly) = size(a.data)
Base.IndexStyle(::Type{<:ReadOnly}) = IndexLinear()
Base.@propagate_inbounds Base.getindex(a::ReadOnly, i::Int) = a.data[i]
Base.setindex!(::ReadOnly, v, i::Int) =
    throw(ArgumentError("read-only: this array is the harness's memory, shared with numpy without a copy"))
Base.parent(a::ReadOnly) = a.data

"""True when `a` is laid out as a dense column-major array of its size: the stride of every axis
longer than 1 is the product of the sizes before it. A size-1 axis may carry any stride (numpy
gives `x[None]`'s new axis stride 0), as it never moves the address."""
function column_major(a::AbstractArray)
    expected = 1
    for (n, s) in zip(size(a), strides(a))
        n > 1 && s != expected && return false
        expected *= n
    end
    return true
end

"""A read-only Julia view of a column-major array from numpy (a PythonCall.PyArray), no copy.

`a` holds the numpy object; GC.@preserve keeps it alive while the pointer is taken, and the
trainer keeps `a` itself (its `source` field) for as long as it uses the view."""
function host_array(a::AbstractArray{T,N}) where {T,N}
    a isa Array && return a
    a isa ReadOnly && return a
    column_major(a) ||
        error("expected a column-major (Fortran-order) array, got strides $(strides(a)) for size $(size(a))")
    data = GC.@preserve a unsafe_wrap(Array, pointer(a), size(a))
    return ReadOnly{T,N}(data)
end

# --------------------------------------------------------------------------- data digests
"""SHA-256 (hex) of the bytes of an Array, in memory (column-major) order."""
function digest(a::Array)
    GC.@preserve a begin
        bytes = unsafe_wrap(Array, Ptr{UInt8}(pointer(a)), sizeof(a))
        return bytes2hex(sha256(bytes))
    end
end

"""What a trainer holds, back in the harness's encoding: host memory, integers (labels, token
ids) 0-based again. A device array is copied back to the host first."""
harness_encoding(a::ReadOnly) = harness_encoding(parent(a))
harness_encoding(a::Array{<:AbstractFloat}) = a
harness_encoding(a::Array{<:Integer}) = Array{Int64}(a) .- OFFSET
harness_encoding(a::AbstractArray) = harness_encoding(Array(a))

"""SHA-256 of the training inputs ("x") or labels ("y") as the trainer holds them (its `x` and
`y` fields, on the host or the device), in the harness's encoding. It equals the manifest's
digest only if the trainer trains on exactly the harness's values, in the harness's order:
WHCN column-major bytes are the NCHW C-order bytes, (maxlen, N) column-major ids are (N, maxlen)
C-order ids."""
function data_digest(t, name::AbstractString)
    name in ("x", "y") || error("data_digest: no array $(repr(name)); choices: x, y")
    return digest(harness_encoding(getfield(t, Symbol(name))))
end

# --------------------------------------------------------------------------- batches
"""Column `j` of the epoch plan: the 1-based example indices of step `j` (a column, (B,))."""
batch_indices(plan::AbstractMatrix, j::Integer) = collect(Int, view(plan, :, j))

"""Eval batches over the last dimension of x: ranges of at most `size` examples (spec["eval_batch"])."""
eval_batches(n::Integer, size::Integer) = (i:min(i + size - 1, n) for i in 1:size:n)

"""The last dimension of x, selected (a copy: the gathered batch)."""
lastdim(x::AbstractArray{T,N}, idx) where {T,N} = x[ntuple(_ -> Colon(), N - 1)..., idx]

"""Write `a` into the last dimension of `dest` at `idx` (one eval batch of logits, any rank)."""
function setlastdim!(dest::AbstractArray{T,N}, idx, a) where {T,N}
    dest[ntuple(_ -> Colon(), N - 1)..., idx] = a
    return dest
end

# --------------------------------------------------------------------------- CUDA diagnosis
const CUDA_PKG = Base.PkgId(Base.UUID("052768ef-5323-5732-b1bb-66c8b64840ba"), "CUDA")

"""Why CUDA.jl (loaded by the runtime for --device cuda) cannot run here, in one line with the
fix. CUDA.jl picks its runtime (CUDA_Runtime_jll's artifact) from the driver it sees when it is
precompiled; precompiled where no driver was visible (an offline worker, a login node, a
container build) it caches "no runtime" and stays non-functional on a GPU host (CUDA.jl
src/initialization.jl: "you need to specify which CUDA version to use ... CUDA.set_runtime_version!")."""
function cuda_problem()
    CUDA = get(Base.loaded_modules, CUDA_PKG, nothing)
    CUDA === nothing && return "CUDA.jl is not loaded"
    CUDA.functional() && return nothing
    driver_seen = Sys.which("nvidia-smi") !== nothing || isfile("/dev/nvidiactl")
    runtime = isdefined(CUDA, :CUDA_Runtime) && !CUDA.CUDA_Runtime.is_available()
    if driver_seen && runtime
        v = try
            d = CUDA.driver_version(); "$(d.major).$(d.minor)"
        catch
            "12.6"
        end
        project = dirname(Base.active_project())
        return "CUDA.jl sees an NVIDIA driver but no CUDA runtime: it was precompiled where no driver was " *
               "visible and cached that choice. Fix once on this machine, then start again: " *
               "$(first(Base.julia_cmd().exec)) --project=$project -e 'using CUDA; CUDA.set_runtime_version!(v\"$v\")'"
    end
    driver_seen || return "no NVIDIA driver found (nvidia-smi, /dev/nvidiactl): run on a GPU host or use --device cpu"
    return "CUDA.functional() is false; `using CUDA; CUDA.functional(true)` in this environment prints why"
end

end # module
