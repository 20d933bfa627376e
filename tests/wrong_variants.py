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
from dataclasses import dataclass

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
    "cnn-predict-stale": Variant("cnn", "transfer", "predict runs a copy of the weights last loaded, which "
                                 "training never reaches (as a jitted predict closing over its parameters would)"),
}


def build(name: str, spec, options):
    """The PyTorch trainer of variant `name` (imports torch: call inside the worker only)."""
    import numpy as np
    import torch
    from torch import nn

    from harness.data.cache import array_digest
    from harness.specs import CNN_DROPOUT
    from python_models.pytorch import cnn, resnet50, rnn
    from python_models.pytorch.trainer import TorchTrainer

    torch.manual_seed(options.seed)
    off = (0.0, 0.0, 0.0)
    if name == "cnn-dropout-0.25":
        return TorchTrainer(cnn.CNN((0.25, 0.25, 0.25) if options.dropout else off), spec, options)
    if name == "cnn-dropout-at-test":
        class AlwaysDropout(nn.Dropout):
            def forward(self, x):
                return nn.functional.dropout(x, self.p, training=True)

        model = cnn.CNN(CNN_DROPOUT if options.dropout else off)
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

        return TorchTrainer(HWC(CNN_DROPOUT if options.dropout else off), spec, options)
    if name == "cnn-default-init":
        model = cnn.CNN(CNN_DROPOUT if options.dropout else off)
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
        return TorchTrainer(model, spec, options)
    if name == "cnn-frozen-bias":
        model = cnn.CNN(CNN_DROPOUT if options.dropout else off)
        model.fc2.bias.requires_grad_(False)
        return TorchTrainer(model, spec, options)
    if name == "cnn-data-rescaled":
        class Rescaled(TorchTrainer):
            def fit_data(self, x, y):
                super().fit_data(np.asarray(x) * 2 - 1, y)

            def data_digest(self, which):
                return array_digest((self.x if which == "x" else self.y).numpy())

        return Rescaled(cnn.CNN(CNN_DROPOUT if options.dropout else off), spec, options)
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

        trainer = StalePredict(cnn.CNN(CNN_DROPOUT if options.dropout else off), spec, options)
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
            model = resnet50.ResNet50(spec.num_classes)
        finally:
            resnet50.nn.BatchNorm2d = saved
        return TorchTrainer(model, spec, options)
    if name.startswith("resnet50-"):
        model = resnet50.ResNet50(spec.num_classes)
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

        return GateOrder(rnn.GRUClassifier(), spec, options, rename=rnn.RENAME)
    if name == "rnn-keras-adam-eps":
        trainer = TorchTrainer(rnn.GRUClassifier(), spec, options, rename=rnn.RENAME)
        for group in trainer.optimizer.param_groups:
            group["eps"] = 1e-7
        return trainer
    raise KeyError(name)


def install(name: str) -> None:
    """Make the worker's Python runtime build variant `name` for PyTorch's model of that name."""
    from harness.runtimes import python as runtime

    original, model = runtime.build, VARIANTS[name].model

    def patched(impl, spec, options):
        if impl.name == "pytorch" and impl.model == model:
            return build(name, spec, options)
        return original(impl, spec, options)

    runtime.build = patched


if __name__ == "__main__":
    from harness import worker

    install(os.environ[ENV])
    code = worker.main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
