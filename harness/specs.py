"""The neutral model specs: what every implementation, in every language, must build.

Each spec fixes the layer list, the initialiser families, the optimiser, the data shapes,
the parameter count and the canonical weight table. The canonical weight table follows
PyTorch's conventions (convolution kernels (out, in, kh, kw), dense (out, in), GRU gates
stacked (reset, update, new)); implementations convert to and from it themselves.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from math import prod

EVAL_BATCH = 256  # examples per eval-mode forward pass (predict), in every language


@dataclass(frozen=True)
class Optimizer:
    """The optimiser, in PyTorch's form (torch.optim.SGD / Adam / AdamW and clip_grad_norm_).

    adamw, per step t (from 1) and tensor w with gradient g (after clipping):
        w <- w * (1 - lr * weight_decay)          only tensors whose Weight.decay is True
        m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
        w <- w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    clip_norm (global gradient-norm clipping, torch.nn.utils.clip_grad_norm_): before the step,
        norm = sqrt(sum over every gradient tensor of sum(g^2));  c = clip_norm / (norm + clip_eps);
        if c < 1, every gradient is multiplied by c (one factor for all tensors)."""

    name: str  # "sgd" | "adam" | "adamw"
    lr: float
    momentum: float = 0.0  # SGD, PyTorch's form: v = m*v + g; w -= lr*v
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0  # adamw: decoupled, on the tensors whose Weight.decay is True
    clip_norm: float | None = None  # global gradient-norm clipping threshold; None: no clipping
    clip_eps: float = 1e-6  # the clipping factor is clip_norm / (norm + clip_eps), as PyTorch computes it


@dataclass(frozen=True)
class Weight:
    """One tensor of the canonical weight file."""

    key: str
    shape: tuple[int, ...]
    trainable: bool = True  # BatchNorm running statistics are buffers, not parameters
    init: str = ""  # initialiser family, e.g. "glorot_uniform", "zeros", "he_normal_fan_out", "normal(0,0.02)"
    decay: bool = False  # AdamW's weight decay applies to it (matrices and embeddings; not biases or LayerNorm)


# --------------------------------------------------------------------------- architectures
# Every constant a model's code needs, as fields of its spec (`spec.arch`): Python models read
# them as attributes, R and Julia as plain data (ModelSpec.as_data), so no language restates one.
@dataclass(frozen=True)
class CNNArch:
    channels: tuple[int, ...] = (50, 50, 100, 100)  # conv1..conv4, 3x3, pad 1
    dense: int = 512  # fc1's width
    dropout: tuple[float, ...] = (0.25, 0.25, 0.5)  # after conv2's pool, conv4's pool, fc1
    flat: tuple[int, int, int] = (100, 8, 8)  # (C, H, W) of the map fc1 reads, flattened in C,H,W order

    def derived(self) -> dict:
        return {}


@dataclass(frozen=True)
class ResNetArch:
    stages: tuple[tuple[int, int, int], ...] = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, first stride)
    expansion: int = 4
    stem: int = 64  # the 7x7 stem convolution's output channels
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1  # PyTorch convention: running = (1-m)*running + m*batch; Keras momentum = 1-m = 0.9

    def blocks(self):
        """Yield (prefix, in_channels, width, stride, has_downsample) for the 16 bottleneck blocks."""
        cin = self.stem
        for stage, (width, blocks, stride) in enumerate(self.stages, start=1):
            for b in range(blocks):
                yield f"layer{stage}.{b}", cin, width, stride if b == 0 else 1, b == 0
                cin = width * self.expansion

    def derived(self) -> dict:
        return {"blocks": [dict(prefix=p, cin=c, width=w, stride=s, downsample=d) for p, c, w, s, d in self.blocks()]}


@dataclass(frozen=True)
class GRUArch:
    vocab: int = 30_000
    embed: int = 125
    hidden: int = 100
    maxlen: int = 150

    def derived(self) -> dict:
        return {}


@dataclass(frozen=True)
class TransformerArch:
    """A character-level GPT (nanoGPT's Shakespeare model, byte vocabulary): pre-LayerNorm blocks
    x = x + drop(proj(attn(ln1(x)))); x = x + drop(mlp.proj(gelu(mlp.fc(ln2(x))))), then ln_f and
    logits = x @ tok_emb.weight^T (the output projection is the token embedding, no bias)."""

    vocab: int = 256  # bytes: any text is data, no tokenizer
    context: int = 256  # positions per window; a window of context + 1 bytes gives x and y
    layers: int = 6
    heads: int = 6
    width: int = 384  # the residual stream; each head is width / heads wide
    mlp_ratio: int = 4  # the MLP's hidden width is mlp_ratio * width
    dropout: float = 0.2  # on the attention probabilities, after the attention projection, after the MLP
    ln_eps: float = 1e-5
    tied: bool = True  # the output projection is tok_emb.weight
    init_std: float = 0.02  # normal(0, init_std): every Linear weight and both embeddings

    @property
    def head_width(self) -> int:
        return self.width // self.heads

    @property
    def mlp_width(self) -> int:
        return self.mlp_ratio * self.width

    @property
    def residual_std(self) -> float:
        """normal(0, init_std / sqrt(2 * layers)) for the two projections writing into the residual
        stream (attn.proj, mlp.proj), as GPT-2 and nanoGPT scale them."""
        return self.init_std / math.sqrt(2 * self.layers)

    def derived(self) -> dict:
        return {"head_width": self.head_width, "mlp_width": self.mlp_width, "residual_std": self.residual_std}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dataset: str  # the built-in data set the model trains on: "cifar10" | "imdb"
    input_shape: tuple[int, ...]  # one example, NCHW for images: (3, 32, 32); tokens: (150,)
    input_dtype: str  # dtype of the prepared arrays: "float32" images, "int64" token ids
    num_classes: int  # logits per prediction: classes, or the vocabulary of a next-token model
    epochs: int
    batch_size: int
    optimizer: Optimizer
    param_count: int
    layers: tuple[str, ...]
    weights: tuple[Weight, ...]
    arch: CNNArch | ResNetArch | GRUArch | TransformerArch  # the model's own constants
    notes: tuple[str, ...] = field(default=())
    eval_batch: int = EVAL_BATCH
    # One example's target: () a class label (y is (N,), logits (N, classes)); (T,) a next-token
    # target per position (y is (N, T), logits (N, T, num_classes), the loss the mean over every position).
    target_shape: tuple[int, ...] = ()

    @property
    def sequence(self) -> bool:
        """A next-token model: targets and logits per position."""
        return bool(self.target_shape)

    @property
    def tokens_per_example(self) -> int | None:
        """Predicted positions per example (the transformer's context); None for a classifier."""
        return prod(self.target_shape) if self.target_shape else None

    def logits_shape(self, n: int) -> tuple[int, ...]:
        return (n, *self.target_shape, self.num_classes)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {w.key: w.shape for w in self.weights}

    def counted_params(self) -> int:
        return sum(prod(w.shape) for w in self.weights if w.trainable)

    def as_data(self) -> dict:
        """The spec as plain JSON-able data, the one form R and Julia receive it in: the scalar
        fields, the optimizer, the weight table, and the architecture's constants (and what
        follows from them, e.g. ResNet-50's block list) at the top level."""
        out = {k: v for k, v in asdict(self).items() if k not in ("weights", "layers", "notes", "arch")}
        out["input_shape"] = list(self.input_shape)
        out["target_shape"] = list(self.target_shape)
        out["weights"] = [{"key": w.key, "shape": list(w.shape), "trainable": w.trainable, "init": w.init,
                           "decay": w.decay} for w in self.weights]
        out["weight_keys"] = [w.key for w in self.weights]
        arch = {k: _lists(v) for k, v in asdict(self.arch).items()}
        clash = set(arch) & set(out)
        if clash:
            raise ValueError(f"{self.name}: architecture fields {sorted(clash)} shadow spec fields")
        return {**out, **arch, **self.arch.derived()}


def _lists(v):
    """Tuples (nested) as lists: how R and Julia read sequences."""
    return [_lists(x) for x in v] if isinstance(v, (tuple, list)) else v


# --------------------------------------------------------------------------- cnn
def _conv(key: str, cin: int, cout: int, k: int = 3, bias: bool = True, init: str = "glorot_uniform"):
    out = [Weight(f"{key}.weight", (cout, cin, k, k), init=init)]
    if bias:
        out.append(Weight(f"{key}.bias", (cout,), init="zeros"))
    return out


def _dense(key: str, fin: int, fout: int, init: str = "glorot_uniform"):
    return [Weight(f"{key}.weight", (fout, fin), init=init), Weight(f"{key}.bias", (fout,), init="zeros")]


CNN_ARCH = CNNArch()

CNN = ModelSpec(
    name="cnn",
    dataset="cifar10",
    input_shape=(3, 32, 32),
    input_dtype="float32",
    num_classes=10,
    epochs=10,
    batch_size=64,
    optimizer=Optimizer("sgd", lr=0.01, momentum=0.9),
    param_count=3_441_592,
    layers=(
        "conv1: conv3x3(3->50, pad 1) -> ReLU",
        "conv2: conv3x3(50->50, pad 1) -> maxpool 2/2 -> ReLU -> dropout 0.25",
        "conv3: conv3x3(50->100, pad 1) -> ReLU",
        "conv4: conv3x3(100->100, pad 1) -> maxpool 2/2 -> ReLU -> dropout 0.25",
        "flatten: 100x8x8 = 6400 in C,H,W order",
        "fc1: dense 6400->512 -> ReLU -> dropout 0.5",
        "fc2: dense 512->10 (logits; softmax inside the loss)",
    ),
    weights=tuple(
        _conv("conv1", 3, 50) + _conv("conv2", 50, 50) + _conv("conv3", 50, 100) + _conv("conv4", 100, 100)
        + _dense("fc1", 6400, 512) + _dense("fc2", 512, 10)
    ),
    arch=CNN_ARCH,
    notes=("Glorot-uniform weights (fan computed as PyTorch/Keras do: fan_in=in*kh*kw, fan_out=out*kh*kw), zero biases.",),
)


# --------------------------------------------------------------------------- resnet50
RESNET_ARCH = ResNetArch()


def _bn(key: str, c: int):
    return [
        Weight(f"{key}.weight", (c,), init="ones"),
        Weight(f"{key}.bias", (c,), init="zeros"),
        Weight(f"{key}.running_mean", (c,), trainable=False, init="zeros"),
        Weight(f"{key}.running_var", (c,), trainable=False, init="ones"),
    ]


def _resnet50_weights(arch: ResNetArch, num_classes: int):
    he = "he_normal_fan_out"
    w = _conv("conv1", 3, arch.stem, k=7, bias=False, init=he) + _bn("bn1", arch.stem)
    for prefix, cin, width, _stride, down in arch.blocks():
        cout = width * arch.expansion
        w += _conv(f"{prefix}.conv1", cin, width, k=1, bias=False, init=he) + _bn(f"{prefix}.bn1", width)
        w += _conv(f"{prefix}.conv2", width, width, k=3, bias=False, init=he) + _bn(f"{prefix}.bn2", width)
        w += _conv(f"{prefix}.conv3", width, cout, k=1, bias=False, init=he) + _bn(f"{prefix}.bn3", cout)
        if down:
            w += _conv(f"{prefix}.downsample.0", cin, cout, k=1, bias=False, init=he)
            w += _bn(f"{prefix}.downsample.1", cout)
    # Dense init: PyTorch's default for nn.Linear would differ across frameworks; the spec fixes Glorot-uniform.
    w += _dense("fc", arch.stages[-1][0] * arch.expansion, num_classes)
    return tuple(w)


RESNET50 = ModelSpec(
    name="resnet50",
    dataset="cifar10",
    input_shape=(3, 32, 32),
    input_dtype="float32",
    num_classes=10,
    epochs=10,
    batch_size=64,
    optimizer=Optimizer("sgd", lr=0.01, momentum=0.9),
    param_count=23_528_522,
    layers=(
        "stem: conv7x7(3->64, stride 2, pad 3, no bias) -> BN -> ReLU -> maxpool 3x3/2 pad 1",
        "layer1..layer4: bottleneck blocks [3,4,6,3], widths 64/128/256/512, expansion 4",
        "bottleneck: conv1x1 -> BN -> ReLU -> conv3x3(stride s, pad 1) -> BN -> ReLU -> conv1x1 -> BN; "
        "+ shortcut (first block of a stage: conv1x1 stride s -> BN) -> ReLU  (v1.5: stride on the 3x3)",
        "head: global average pool -> fc 2048->10",
    ),
    weights=_resnet50_weights(RESNET_ARCH, 10),
    arch=RESNET_ARCH,
    notes=(
        "No convolution biases. BatchNorm eps 1e-5, running-average momentum 0.1 (PyTorch's convention; Keras 0.9).",
        "Every stride-2 convolution and pooling pads symmetrically (explicit padding, never TF's 'SAME').",
        "He-normal fan-out convolution weights (std = sqrt(2 / (out*kh*kw))); BN weight 1, bias 0; fc Glorot-uniform, zero bias.",
        "Input 32x32 by default; --image-size 224 upsamples (nearest) before the clock starts.",
    ),
)


# --------------------------------------------------------------------------- rnn
GRU_ARCH = GRUArch()

RNN = ModelSpec(
    name="rnn",
    dataset="imdb",
    input_shape=(GRU_ARCH.maxlen,),
    input_dtype="int64",
    num_classes=2,
    epochs=3,
    batch_size=64,
    optimizer=Optimizer("adam", lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8),
    param_count=3_818_302,
    layers=(
        "embedding: 30000 x 125 (index 0 is padding but is trained like any other row)",
        "gru: GRU(125->100), reset gate applied after the hidden matmul (cuDNN/PyTorch form), zero initial state",
        "fc: last step's output 100 -> 2 logits",
    ),
    weights=(
        Weight("embedding.weight", (GRU_ARCH.vocab, GRU_ARCH.embed), init="uniform(-0.05,0.05)"),
        Weight("gru.weight_ih", (3 * GRU_ARCH.hidden, GRU_ARCH.embed), init="glorot_uniform over the stacked matrix"),
        Weight("gru.weight_hh", (3 * GRU_ARCH.hidden, GRU_ARCH.hidden), init="orthogonal over the stacked matrix"),
        Weight("gru.bias_ih", (3 * GRU_ARCH.hidden,), init="zeros"),
        Weight("gru.bias_hh", (3 * GRU_ARCH.hidden,), init="zeros"),
        *_dense("fc", GRU_ARCH.hidden, 2),
    ),
    arch=GRU_ARCH,
    notes=(
        "GRU gates stacked (reset, update, new) in the canonical file, as PyTorch does; Keras stacks (update, reset, new).",
        "Initialisers are Keras' GRU defaults seen in the canonical layout: weight_ih Glorot-uniform with fan_in=125, "
        "fan_out=300; weight_hh orthogonal over the whole (300, 100) matrix (orthonormal columns).",
        "r = s(W_ir x + b_ir + W_hr h + b_hr); z = s(W_iz x + b_iz + W_hz h + b_hz); "
        "n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h' = (1 - z) * n + z * h",
    ),
)

# --------------------------------------------------------------------------- transformer
TRANSFORMER_PARAMS = 10_844_160  # the full size; a test size counts its own weight table
# The test-only size (tests/conftest.py sets it for CI): every layer type, 2 blocks of several
# heads, a context and width small enough that every implementation trains it in seconds on one
# core. The full-size 2-block model (width 384, context 256) measured 23-25 s per batch of 64 on
# one core of the shared 2-core test machine, too slow for a run per implementation in CI.
SIZE_VARIABLE = "DL_ROSETTA_TRANSFORMER_SIZE"
TRANSFORMER_SIZES = {"full": TransformerArch(), "test": TransformerArch(layers=2, heads=4, width=64, context=64)}


def _normal(std: float) -> str:
    return f"normal(0,{std!r})"


def _transformer_weights(arch: TransformerArch) -> tuple[Weight, ...]:
    """PyTorch's layout: Linear weights (out, in); q, k, v packed as one (3*width, width) matrix in
    that order, each part's rows head after head (head h is rows h*head_width .. (h+1)*head_width)."""
    c, std = arch.width, _normal(arch.init_std)

    def linear(key, fin, fout, init):
        return [Weight(f"{key}.weight", (fout, fin), init=init, decay=True), Weight(f"{key}.bias", (fout,), init="zeros")]

    def layer_norm(key):
        return [Weight(f"{key}.weight", (c,), init="ones"), Weight(f"{key}.bias", (c,), init="zeros")]

    w = [Weight("tok_emb.weight", (arch.vocab, c), init=std, decay=True),
         Weight("pos_emb.weight", (arch.context, c), init=std, decay=True)]
    for i in range(arch.layers):
        b = f"blocks.{i}"
        w += layer_norm(f"{b}.ln1") + linear(f"{b}.attn.qkv", c, 3 * c, std)
        w += linear(f"{b}.attn.proj", c, c, _normal(arch.residual_std))
        w += layer_norm(f"{b}.ln2") + linear(f"{b}.mlp.fc", c, arch.mlp_width, std)
        w += linear(f"{b}.mlp.proj", arch.mlp_width, c, _normal(arch.residual_std))
    return tuple(w + layer_norm("ln_f"))


def transformer_spec(arch: TransformerArch) -> ModelSpec:
    weights = _transformer_weights(arch)
    full = arch == TRANSFORMER_SIZES["full"]
    return ModelSpec(
        name="transformer",
        dataset="shakespeare",
        input_shape=(arch.context,),
        input_dtype="int64",
        num_classes=arch.vocab,
        target_shape=(arch.context,),
        epochs=10,
        batch_size=64,
        optimizer=Optimizer("adamw", lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, clip_norm=1.0),
        param_count=TRANSFORMER_PARAMS if full else sum(prod(w.shape) for w in weights),
        layers=(
            f"tok_emb: embedding {arch.vocab} x {arch.width}; pos_emb: learned positions {arch.context} x {arch.width}; "
            "x = tok_emb[tokens] + pos_emb[0..T-1]",
            f"blocks.0..{arch.layers - 1} (pre-LayerNorm): x = x + attn(ln1(x)); x = x + mlp(ln2(x))",
            f"attn: qkv Linear {arch.width}->{3 * arch.width} (q, k, v), {arch.heads} heads of {arch.head_width}, causal "
            f"softmax(q k^T / sqrt({arch.head_width})) -> dropout {arch.dropout} -> @ v -> proj Linear "
            f"{arch.width}->{arch.width} -> dropout {arch.dropout}",
            f"mlp: fc Linear {arch.width}->{arch.mlp_width} -> GELU (exact, erf) -> proj Linear "
            f"{arch.mlp_width}->{arch.width} -> dropout {arch.dropout}",
            f"ln_f: LayerNorm({arch.width}, eps {arch.ln_eps:g}); logits = x @ tok_emb.weight^T (tied, no bias)",
        ),
        weights=weights,
        arch=arch,
        notes=(
            "Byte-level tokens (vocabulary 256). x is a window's first context bytes, y the same window shifted by one; "
            "the loss is the mean next-byte cross-entropy over every position.",
            f"Init: normal(0, {arch.init_std:g}) for every Linear weight and both embeddings, zero biases, LayerNorm "
            f"weight 1 / bias 0, normal(0, {arch.init_std:g}/sqrt(2*{arch.layers})) for attn.proj and mlp.proj.",
            "AdamW (decoupled weight decay 0.1 on matrices and embeddings only: Weight.decay), global gradient-norm "
            "clipping at 1.0 as torch.nn.utils.clip_grad_norm_ computes it, lr 1e-3 constant, betas (0.9, 0.99), eps 1e-8.",
            "Dropout (attention probabilities, after the attention projection, after the MLP) is off in eval mode and "
            "for the equivalence checks' training steps.",
        ),
    )


def _transformer_size() -> TransformerArch:
    size = os.environ.get(SIZE_VARIABLE, "full")
    if size not in TRANSFORMER_SIZES:
        raise ValueError(f"{SIZE_VARIABLE}={size!r}; choices: {', '.join(TRANSFORMER_SIZES)}")
    return TRANSFORMER_SIZES[size]


TRANSFORMER = transformer_spec(_transformer_size())

SPECS: dict[str, ModelSpec] = {s.name: s for s in (CNN, RESNET50, RNN, TRANSFORMER)}
MODELS = tuple(SPECS)


def get_spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choices: {', '.join(MODELS)}") from None

