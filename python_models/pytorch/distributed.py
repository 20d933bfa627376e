"""PyTorch data parallel: DistributedDataParallel, one process per replica, started by torchrun.

`python -m harness --framework pytorch --device cuda --gpus N` makes the harness launch
`python -m torch.distributed.run --standalone --nproc-per-node=N -m harness.worker ...`; every
process builds the same model (same seed), and DDP all-reduces (averages) the gradients during
backward: NCCL between GPUs, gloo between CPU processes (`--device cpu --gpus N`: N CPU replicas,
for testing the data-parallel path). Several machines use torchrun's c10d rendezvous
(`--nodes K --rdzv-endpoint HOST:PORT`), the same code.

Each row of `batches` is one global batch of the harness's epoch order; replica r trains on its
r-th slice. Averaged gradients of equal slices are the gradient of the global batch's mean loss,
so one step equals the one-process step on the whole row (up to summation order). Weak scaling
(default): the global batch is the spec's batch x replicas and the learning rate scales by the
replica count; strong: the global batch is the spec's and the learning rate is unchanged.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from python_models.pytorch.trainer import TorchTrainer, setup_info


class DDPTrainer(TorchTrainer):
    def __init__(self, model: torch.nn.Module, spec, options, **kw):
        self.rank, self.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = options.device == "cuda"
        if cuda:
            if self.local_rank >= torch.cuda.device_count():
                raise RuntimeError(f"replica {self.local_rank} needs GPU {self.local_rank}; "
                                   f"PyTorch sees {torch.cuda.device_count()}")
            torch.cuda.set_device(self.local_rank)  # "cuda" below means this replica's GPU
        backend = "nccl" if cuda else "gloo"
        dist.init_process_group(backend)
        super().__init__(model, spec, options, **kw)
        # Same seed everywhere, and DDP broadcasts rank 0's parameters and buffers on construction.
        self.ddp = DistributedDataParallel(self.model, device_ids=[self.local_rank] if cuda else None)
        self.forward = torch.compile(self.ddp) if options.compile else self.ddp
        self.lr_scale = self.world if options.scaling == "weak" else 1
        for group in self.optimizer.param_groups:
            group["lr"] *= self.lr_scale
        self.info["fast_path"]["ddp"] = {"backend": backend, "lr_scale": self.lr_scale,
                                         "batchnorm": "per-replica batch statistics; buffers broadcast "
                                                      "from rank 0 at each forward (DDP default)"}
        self.info["setup"] = setup_info(options, self.world, f"torchrun + DistributedDataParallel ({backend})")

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def _my_slices(self, batches):
        for row in batches:  # iterating `batches` keeps the harness's progress reports
            if len(row) % self.world:
                raise ValueError(f"a global batch of {len(row)} rows does not split over {self.world} replicas; "
                                 "pick --batch-size divisible by the replica count (or --scaling weak)")
            per = len(row) // self.world
            yield row[self.rank * per:(self.rank + 1) * per]

    def train_epoch(self, batches) -> np.ndarray:
        mine = torch.from_numpy(super().train_epoch(self._my_slices(batches))).to(self.device)
        dist.all_reduce(mine)  # each replica's slice mean -> the global batch's mean loss per step
        return (mine / self.world).cpu().numpy()

    def peak_device_memory(self) -> int | None:
        if self.device.type != "cuda":
            return None
        peaks = torch.tensor([torch.cuda.max_memory_allocated()], device=self.device)
        every = [torch.zeros_like(peaks) for _ in range(self.world)]
        dist.all_gather(every, peaks)  # every replica calls this, in the same order
        self.info["setup"]["peak_bytes_per_device"] = [int(p.item()) for p in every]
        return int(max(p.item() for p in every))
