"""Deliberately wrong PyTorch models, for tests only: the equivalence checks must catch each one.

Each variant is a drift the 2018 benchmark or a later port really made (a different dropout rate,
dropout left on at test time, H,W,C flatten order, Keras' BatchNorm/Adam defaults, Keras' GRU gate
order, default initialisers, data rescaled inside the implementation). None is in the registry.

The test runs this file as the worker: `python tests/wrong_variants.py JOB --events-fd N` with
WRONG_VARIANT=<name> in the environment; it replaces the PyTorch build of the variant's model
and hands over to harness.worker.main, so the variant goes through the very same worker modes.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace

ENV = "WRONG_VARIANT"


@dataclass(frozen=True)
class Variant:
    model: str
    caught_by: str  # the check (harness.equivalence.CHECKS) that must fail
    what: str


VARIANTS = {
    "cnn-dropout-0.25": Variant("cnn", "dropout", "fc1's dropout 0.25 instead of 0.5"),
    "cnn-dropout-at-test": Variant("cnn", "logits", "dropout left on at test time"),
    "cnn-flatten-hwc": Variant("cnn", "logits", "flatten in H,W,C order with C,H,W weights"),
    "cnn-default-init": Variant("cnn", "init", "PyTorch's default Conv2d/Linear initialisers"),
    "cnn-frozen-bias": Variant("cnn", "shapes", "fc2's bias not trainable"),
    "cnn-data-rescaled": Variant("cnn", "data", "images rescaled to [-1, 1] inside the implementation"),
    "resnet50-keras-bn-eps": Variant("resnet50", "logits", "Keras' default BatchNorm eps 1e-3"),
    "resnet50-keras-bn-momentum": Variant("resnet50", "steps", "Keras' momentum 0.99 read as PyTorch's 0.1"),
    "resnet50-biased-running-var": Variant("resnet50", "steps", "running variance from the biased batch "
                                           "variance, as Keras' BatchNormalization keeps it"),
    "rnn-keras-gate-order": Variant("rnn", "logits", "GRU gates mapped as Keras stacks them (update, reset, new)"),
    "rnn-keras-adam-eps": Variant("rnn", "steps", "Keras' default Adam epsilon 1e-7"),
    "transformer-gelu-tanh": Variant("transformer", "steps", "GELU's tanh approximation (Keras' and JAX's "
                                     "approximate=True) instead of the exact erf form"),
    "transformer-decay-layernorm": Variant("transformer", "steps", "weight decay on every tensor, LayerNorm and "
                                           "biases included (AdamW's default groups)"),
    "transformer-clip-per-tensor": Variant("transformer", "steps", "gradient clipping per tensor "
                                           "(clipnorm, optax.clip_by_block_rms-like) instead of one global norm"),
    "transformer-mask-off-by-one": Variant("transformer", "logits", "a causal mask that lets each position see "
                                           "the next one"),
    "transformer-dropout-always": Variant("transformer", "steps", "dropout kept on when the harness turns it off "
                                          "(RunOptions.dropout False) for the check-3 steps"),
    "cnn-predict-stale": Variant("cnn", "transfer", "predict runs a copy of the weights last loaded, which "
                                 "training never reaches (as a jitted predict closing over its parameters would)"),
}


# Wrong exports: the trained model is right (checks 1-5 pass), the file its exporter writes is not.
# `check --checks deploy` must catch each: the deployed logits differ from the framework's own.
EXPORT_VARIANTS = {
    "resnet50-export-bn-eps": Variant("resnet50", "deploy", "BatchNorm exported with Keras' eps 1e-3, so the "
                                      "scale folded into each convolution is gamma / sqrt(var + 1e-3)"),
    "cnn-export-nhwc-as-nchw": Variant("cnn", "deploy", "the file declares NHWC input and reshapes it to NCHW "
                                       "(a reshape where a transpose belongs)"),
}


def build_export_variant(name: str, spec, options):
    """A correct PyTorch trainer whose export() writes the wrong model named `name`."""
    import copy

    import numpy as np
    import torch
    from torch import nn

    from python_models.pytorch import cnn, resnet50
    from python_models.pytorch.export import export as torch_export
    from python_models.pytorch.trainer import TorchTrainer

    torch.manual_seed(options.seed)
    if name == "resnet50-export-bn-eps":
        class WrongEps(TorchTrainer):
            def export(self, fmt, path, example):
                saved = self.model
                self.model = copy.deepcopy(saved)
                for m in self.model.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eps = 1e-3
                try:
                    return torch_export(self, fmt, path, example)
                finally:
                    self.model = saved

        return WrongEps(resnet50.ResNet50(spec.arch, spec.num_classes), spec, options)
    if name == "cnn-export-nhwc-as-nchw":
        class ReshapedInput(nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, x):  # x: (N, H, W, C) as declared
                n, h, w, c = x.shape
                return self.model(x.reshape(n, c, h, w))  # the bug: the bytes of NHWC read as NCHW

        class WrongLayout(TorchTrainer):
            def export(self, fmt, path, example):
                saved = self.model
                self.model = ReshapedInput(saved)
                try:
                    made = torch_export(self, fmt, path, np.ascontiguousarray(np.asarray(example).transpose(0, 2, 3, 1)))
                finally:
                    self.model = saved
                return {**made, "layout": "NHWC"}

        return WrongLayout(cnn.CNN(spec.arch, spec.num_classes, options.dropout), spec, options)
    raise KeyError(name)


def build(name: str, spec, options):
    """The PyTorch trainer of variant `name` (imports torch: call inside the worker only)."""
    import numpy as np
    import torch
    from torch import nn

    from harness.data.cache import array_digest
    from python_models.pytorch import cnn, resnet50, rnn
    from python_models.pytorch.trainer import TorchTrainer

    torch.manual_seed(options.seed)
    if name == "cnn-dropout-0.25":
        arch = replace(spec.arch, dropout=(0.25, 0.25, 0.25))
        return TorchTrainer(cnn.CNN(arch, spec.num_classes, options.dropout), spec, options)
    if name == "cnn-dropout-at-test":
        class AlwaysDropout(nn.Dropout):
            def forward(self, x):
                return nn.functional.dropout(x, self.p, training=True)

        model = cnn.CNN(spec.arch, spec.num_classes, options.dropout)
        model.drop1, model.drop2, model.drop3 = (AlwaysDropout(m.p) for m in (model.drop1, model.drop2, model.drop3))
        return TorchTrainer(model, spec, options)
    if name == "cnn-flatten-hwc":
        class HWC(cnn.CNN):
            def forward(self, x):
                x = torch.relu(self.conv1(x))
                x = self.drop1(torch.relu(nn.functional.max_pool2d(self.conv2(x), 2)))
                x = torch.relu(self.conv3(x))
                x = self.drop2(torch.relu(nn.functional.max_pool2d(self.conv4(x), 2)))
                x = torch.flatten(x.permute(0, 2, 3, 1), 1)  # H,W,C: what a channels-last port gets
                return self.fc2(self.drop3(torch.relu(self.fc1(x))))

        return TorchTrainer(HWC(spec.arch, spec.num_classes, options.dropout), spec, options)
    if name == "cnn-default-init":
        model = cnn.CNN(spec.arch, spec.num_classes, options.dropout)
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
        return TorchTrainer(model, spec, options)
    if name == "cnn-frozen-bias":
        model = cnn.CNN(spec.arch, spec.num_classes, options.dropout)
        model.fc2.bias.requires_grad_(False)
        return TorchTrainer(model, spec, options)
    if name == "cnn-data-rescaled":
        class Rescaled(TorchTrainer):
            def fit_data(self, x, y):
                super().fit_data(np.asarray(x) * 2 - 1, y)

            def data_digest(self, which):
                return array_digest((self.x if which == "x" else self.y).numpy())

        return Rescaled(cnn.CNN(spec.arch, spec.num_classes, options.dropout), spec, options)
        return Rescaled(cnn.CNN(spec.arch, spec.num_classes, options.dropout), spec, options)
    if name == "cnn-predict-stale":
        import copy

        class StalePredict(TorchTrainer):
            def snapshot(self):
                self.frozen = copy.deepcopy(self.model)

            def set_weights(self, weights):
                super().set_weights(weights)
                self.snapshot()

            def predict(self, x):
                live = self.model, self.forward
                self.model = self.forward = self.frozen
                try:
                    return super().predict(x)
                finally:
                    self.model, self.forward = live

        trainer = StalePredict(cnn.CNN(spec.arch, spec.num_classes, options.dropout), spec, options)
        trainer.snapshot()
        return trainer
    if name == "resnet50-biased-running-var":
        class BiasedBN(nn.BatchNorm2d):
            def forward(self, x):
                out = super().forward(x)  # updates running_var with the unbiased v * n / (n - 1)
                if self.training:  # through .data: backward still needs the buffer's version it saw
                    n = x.numel() / x.shape[1]
                    self.running_var.data.sub_(self.momentum * x.detach().var(dim=(0, 2, 3), unbiased=False) / (n - 1))
                return out

        saved = resnet50.nn.BatchNorm2d
        resnet50.nn.BatchNorm2d = BiasedBN  # python_models.pytorch.resnet50.bn() builds the layers
        try:
            model = resnet50.ResNet50(spec.arch, spec.num_classes)
        finally:
            resnet50.nn.BatchNorm2d = saved
        return TorchTrainer(model, spec, options)
    if name.startswith("resnet50-"):
        model = resnet50.ResNet50(spec.arch, spec.num_classes)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                if name == "resnet50-keras-bn-eps":
                    m.eps = 1e-3
                else:
                    m.momentum = 0.99
        return TorchTrainer(model, spec, options)
    if name == "rnn-keras-gate-order":
        h = spec.weight_shapes()["gru.weight_hh"][1]
        swap = np.r_[h:2 * h, 0:h, 2 * h:3 * h]  # (reset, update, new) <-> (update, reset, new)

        class GateOrder(TorchTrainer):
            def get_weights(self):
                return {k: (v[swap] if k.startswith("gru.") else v) for k, v in super().get_weights().items()}

            def set_weights(self, weights):
                super().set_weights({k: (np.asarray(v)[swap] if k.startswith("gru.") else v)
                                     for k, v in weights.items()})

        return GateOrder(rnn.GRUClassifier(spec.arch, spec.num_classes), spec, options, rename=rnn.RENAME)
    if name == "rnn-keras-adam-eps":
        trainer = TorchTrainer(rnn.GRUClassifier(spec.arch, spec.num_classes), spec, options, rename=rnn.RENAME)
        for group in trainer.optimizer.param_groups:
            group["eps"] = 1e-7
        return trainer
    if name.startswith("transformer-"):
        return _transformer(name, spec, options)
    raise KeyError(name)


def _transformer(name: str, spec, options):
    import torch
    import torch.nn.functional as F

    from python_models.pytorch import transformer
    from python_models.pytorch.trainer import TorchTrainer

    model = transformer.GPT(spec.arch, spec.arch.dropout if options.dropout or name.endswith("-always") else 0.0)
    if name == "transformer-gelu-tanh":
        class TanhMLP(transformer.MLP):
            def forward(self, x):
                return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))

        for block in model.blocks:
            block.mlp.__class__ = TanhMLP
    if name == "transformer-mask-off-by-one":
        class PeekingAttention(transformer.CausalSelfAttention):
            def forward(self, x):
                n, t, c = x.shape
                q, k, v = (p.view(n, t, self.heads, c // self.heads).transpose(1, 2) for p in self.qkv(x).split(c, 2))
                sees = torch.ones(t, t, dtype=torch.bool, device=x.device).tril(diagonal=1)  # j <= i + 1
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=sees,
                                                   dropout_p=self.dropout if self.training else 0.0)
                return self.drop(self.proj(y.transpose(1, 2).reshape(n, t, c)))

        for block in model.blocks:
            block.attn.__class__ = PeekingAttention
    if name == "transformer-clip-per-tensor":
        class PerTensor(TorchTrainer):
            def _clip(self):
                for p in self.model.parameters():
                    torch.nn.utils.clip_grad_norm_([p], self.clip_norm)

        return PerTensor(model, spec, options)
    trainer = TorchTrainer(model, spec, options)
    if name == "transformer-decay-layernorm":
        opt = spec.optimizer
        trainer.optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps,
                                              weight_decay=opt.weight_decay)
    return trainer


def install(name: str) -> None:
    """Make the worker's Python runtime build variant `name` for PyTorch's model of that name."""
    from harness.runtimes import python as runtime

    variant = VARIANTS.get(name) or EXPORT_VARIANTS[name]
    original, model = runtime.build, variant.model
    make = build_export_variant if name in EXPORT_VARIANTS else build

    def patched(impl, spec, options):
        if impl.name == "pytorch" and impl.model == model:
            return make(name, spec, options)
        return original(impl, spec, options)

    runtime.build = patched


if __name__ == "__main__":
    from harness import worker

    install(os.environ[ENV])
    code = worker.main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
