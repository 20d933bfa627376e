"""The PyTorch training loop shared by the PyTorch models: the harness protocol in torch.

One loss for every model: the mean cross-entropy over every prediction, i.e. over the examples of
a classifier ((N, classes) logits, (N,) labels) and over every position of the transformer
((N, T, vocab) logits, (N, T) next-byte targets)."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from harness.protocol import Trainer, check_weights, setup_record
from harness.specs import EVAL_BATCH

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def make_optimizer(model: torch.nn.Module, spec, rename: dict[str, str] | None = None):
    """The spec's optimiser over the model's parameters. AdamW gets two parameter groups: the
    tensors the spec decays (Weight.decay: matrices and embeddings) and the rest (biases, LayerNorm)."""
    opt = spec.optimizer
    if opt.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum)
    if opt.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps)
    decays = {w.key for w in spec.weights if w.decay}
    rename = rename or {}
    groups = {True: [], False: []}
    for name, p in model.named_parameters():  # a tied tensor once, under its first name
        groups[rename.get(name, name) in decays].append(p)
    return torch.optim.AdamW([{"params": groups[True], "weight_decay": opt.weight_decay},
                              {"params": groups[False], "weight_decay": 0.0}],
                             lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps)


def loss_fn(logits, targets):
    """Mean cross-entropy over every prediction: (N, C) with (N,), or (N, T, V) with (N, T)."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten())


def make_trainer(model: torch.nn.Module, spec, options, **kw):
    """One process (TorchTrainer) or one DistributedDataParallel replica of several (distributed.py)."""
    if options.gpus * options.nodes > 1:
        from python_models.pytorch.distributed import DDPTrainer
        return DDPTrainer(model, spec, options, **kw)
    return TorchTrainer(model, spec, options, **kw)


def setup_info(options, replicas: int = 1, engine: str = "one process") -> dict:
    """The device setup a result records: replicas, device names, CUDA/cuDNN/NCCL versions."""
    cuda = options.device == "cuda" and torch.cuda.is_available()
    nccl = None
    if cuda:
        try:
            v = torch.cuda.nccl.version()
            nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except (AttributeError, RuntimeError):
            pass
    devices = ([torch.cuda.get_device_name(i) for i in range(min(options.gpus, torch.cuda.device_count()))]
               if cuda else ["cpu"] * options.gpus)
    return setup_record(options, engine, devices, replicas, cuda=torch.version.cuda if cuda else None,
                        cudnn=torch.backends.cudnn.version() if cuda else None, nccl=nccl)


class TorchTrainer(Trainer):
    """Wraps an nn.Module whose state_dict keys are the canonical weight keys (after `rename`)."""

    def __init__(self, model: torch.nn.Module, spec, options, rename: dict[str, str] | None = None,
                 channels_last: bool = False):
        torch.manual_seed(options.seed)
        self.device = torch.device("cuda" if options.device == "cuda" else "cpu")
        self.spec, self.options = spec, options
        self.rename = rename or {}  # torch key -> canonical key
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.optimizer = make_optimizer(self.model, spec, self.rename)
        # global gradient-norm clipping (clip_grad_norm_'s own eps is the spec's 1e-6)
        self.clip_norm = spec.optimizer.clip_norm
        self.amp = AMP_DTYPES.get(options.precision)
        self.scaler = torch.amp.GradScaler("cuda") if options.precision == "fp16" else None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # autotune: the fast path a PyTorch maintainer picks
        self.forward = torch.compile(self.model) if options.compile else self.model
        self.info = {
            "layout": "NCHW",
            "fast_path": {"cudnn_benchmark": self.device.type == "cuda", "channels_last": channels_last,
                          "torch_compile": options.compile, "autocast": options.precision,
                          "data_on_device": True},
            "deviations": [],
            "setup": setup_info(options),
            "threads": torch.get_num_threads(),  # intra-op threads: the training's and the matmul peak's
        }

    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def fit_data(self, x, y) -> None:
        # One copy into (device) memory before the clock; batches are then gathered on the device.
        self.x = torch.as_tensor(np.array(x)).to(self.device)
        self.y = torch.as_tensor(np.array(y)).to(self.device)

    def _inputs(self, x):
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def train_epoch(self, batches) -> np.ndarray:
        self.model.train()
        losses = []
        for idx in batches:
            idx = torch.from_numpy(idx).to(self.device, non_blocking=True)
            xb, yb = self._inputs(self.x[idx]), self.y[idx]
            with self._autocast():
                loss = loss_fn(self.forward(xb), yb)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
                self._clip()
                self.optimizer.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)  # clip the true gradients
                self._clip()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            losses.append(loss.detach())
        return torch.stack(losses).float().cpu().numpy()  # .cpu() waits for the device

    def _clip(self) -> None:
        if self.clip_norm is not None:  # one norm over every gradient, one factor for all of them
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)

    @torch.no_grad()
    def predict(self, x) -> np.ndarray:
        self.model.eval()
        out = []
        for i in range(0, len(x), EVAL_BATCH):
            xb = self._inputs(torch.as_tensor(np.array(x[i:i + EVAL_BATCH])).to(self.device))
            with self._autocast():
                out.append(self.forward(xb).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {self.rename.get(k, k): v.detach().cpu().numpy().copy()
                for k, v in self.model.state_dict().items() if not k.endswith("num_batches_tracked")}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(self.spec, weights)
        back = {v: k for k, v in self.rename.items()}
        state = {back.get(k, k): torch.as_tensor(np.asarray(v)) for k, v in weights.items()}
        own = self.model.state_dict()
        state.update({k: own[k] for k in own if k.endswith("num_batches_tracked")})
        self.model.load_state_dict(state, strict=True)

    def export(self, fmt, path, example) -> dict:
        from python_models.pytorch.export import export
        return export(self, fmt, path, example)

    def peak_device_memory(self) -> int | None:
        if self.device.type != "cuda":
            return None
        self.info["setup"]["peak_bytes_per_device"] = [torch.cuda.max_memory_allocated()]
        return torch.cuda.max_memory_allocated()

    def matmul_peak(self, precision: str) -> float | None:
        """torch.matmul of two n x n matrices on the run's device, in the run's precision and threads."""
        from harness.peak import CPU_N, GPU_N, best_rate

        n = GPU_N if self.device.type == "cuda" else CPU_N
        dtype = AMP_DTYPES.get(precision, torch.float32)
        a, b = (torch.randn(n, n, device=self.device, dtype=dtype) for _ in range(2))

        def run():
            a @ b
            if self.device.type == "cuda":
                torch.cuda.synchronize()

        return best_rate(run, 2.0 * n**3)
