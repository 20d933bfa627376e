"""The neutral model specs: what every implementation, in every language, must build.

Each spec fixes the layer list, the initialiser families, the optimiser, the data shapes,
the parameter count and the canonical weight table. The canonical weight table follows
PyTorch's conventions (convolution kernels (out, in, kh, kw), dense (out, in), GRU gates
stacked (reset, update, new)); implementations convert to and from it themselves.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import prod

EVAL_BATCH = 256  # examples per eval-mode forward pass (predict), in every language


@dataclass(frozen=True)
class Optimizer:
    name: str  # "sgd" | "adam"
    lr: float
    momentum: float = 0.0  # SGD, PyTorch's form: v = m*v + g; w -= lr*v
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class Weight:
    """One tensor of the canonical weight file."""

    key: str
    shape: tuple[int, ...]
    trainable: bool = True  # BatchNorm running statistics are buffers, not parameters
    init: str = ""  # initialiser family, e.g. "glorot_uniform", "zeros", "he_normal_fan_out"


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
class ModelSpec:
    name: str
    dataset: str  # the built-in data set the model trains on: "cifar10" | "imdb"
    input_shape: tuple[int, ...]  # one example, NCHW for images: (3, 32, 32); tokens: (150,)
    input_dtype: str  # dtype of the prepared arrays: "float32" images, "int64" token ids
    num_classes: int
    epochs: int
    batch_size: int
    optimizer: Optimizer
    param_count: int
    layers: tuple[str, ...]
    weights: tuple[Weight, ...]
    arch: CNNArch | ResNetArch | GRUArch  # the model's own constants
    notes: tuple[str, ...] = field(default=())
    eval_batch: int = EVAL_BATCH

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
        out["weights"] = [{"key": w.key, "shape": list(w.shape), "trainable": w.trainable, "init": w.init}
                          for w in self.weights]
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

SPECS: dict[str, ModelSpec] = {s.name: s for s in (CNN, RESNET50, RNN)}
MODELS = tuple(SPECS)


def get_spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choices: {', '.join(MODELS)}") from None

