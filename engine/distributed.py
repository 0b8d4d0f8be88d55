"""Processes and devices: one code path for 1 or N processes (torchrun), the global batch norm of a DDP run, and the
CUDA-graph capture of ``--cuda-graph``. Used by ``train_unet.py`` and ``train_lstm.py``."""

import os
import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce

__all__ = [
    "setup_distributed",
    "process_group_backend",
    "global_sum",
    "GlobalBatchNorm2d",
    "use_global_batch_norm",
    "capture_graphs",
]


def setup_distributed(device_option):
    """``(rank, world_size, device)``; joins the process group when started by torchrun (``WORLD_SIZE > 1``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_option == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(device_option)
        except RuntimeError:
            raise ValueError(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device_option!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device_option} asks for CUDA, but torch.cuda.is_available() is False")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise ValueError(
                f"process {rank} (local rank {local_rank}) needs GPU {device.index}, but {torch.cuda.device_count()} "
                "GPU(s) are visible: start at most that many processes (--nproc_per_node) or pass --device cpu"
            )
        torch.cuda.set_device(device)
    if world_size > 1:
        dist.init_process_group(process_group_backend(device))
    return rank, world_size, device


def process_group_backend(device):
    """NCCL for the CUDA tensors (gradients, batch-norm sums) and gloo for the CPU ones (the loss sums of the log):
    NCCL alone takes CUDA tensors only. gloo alone on CPU."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def global_sum(values, world_size):
    """Sum of a float64 tensor over the processes (itself when there is one)."""
    if world_size > 1:
        dist.all_reduce(values)
    return values


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of the global batch over all processes.

    ``nn.SyncBatchNorm`` refuses CPU tensors; this one all-reduces the per-channel sums with the differentiable
    ``torch.distributed.nn.functional.all_reduce`` (any backend), so DDP on N processes computes what one process
    computes on the whole batch, on CPU (gloo) and CUDA (nccl) alike. Parameters and buffers are BatchNorm2d's, so
    its state dict loads into a plain ``BatchNorm2d``. In eval mode it is a plain ``BatchNorm2d``.
    """

    def forward(self, input):
        if not self.training:
            return super().forward(input)
        x = input.float()
        dims = (0, 2, 3)
        local_count = x.new_tensor([x.numel() / x.shape[1]])
        sums = all_reduce(torch.cat([x.sum(dims), local_count]))
        count = sums[-1]
        mean = sums[:-1] / count
        centred = x - mean[:, None, None]
        var = all_reduce((centred * centred).sum(dims)) / count  # two passes: no E[x^2] - E[x]^2 cancellation
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * count / (count - 1).clamp(min=1), self.momentum)
        out = centred * torch.rsqrt(var + self.eps)[:, None, None]
        return out * self.weight[:, None, None] + self.bias[:, None, None]


def use_global_batch_norm(module):
    """Replace every ``BatchNorm2d`` in ``module`` by a ``GlobalBatchNorm2d`` holding the same tensors."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum).to(child.weight.device)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            use_global_batch_norm(child)
    return module


def capture_graphs(model, inputs, bf16):
    """Capture ``model``'s forward and backward on the shapes of ``inputs`` (the tuple of tensors the model is called
    with; under bfloat16 autocast if ``bf16``) in CUDA graphs, with
    ``torch.cuda.make_graphed_callables``: from then on, calling the model in training mode copies its inputs into the
    captured ones and replays the graphs, with no host time per kernel (a step at 64 x 128 is bound by that host
    time). Returns the model's own forward, for batches of other shapes (an epoch's smaller last batch); in eval mode
    the model runs its own forward too.

    The capture's warm-up steps accumulate no gradient, and the batch-norm buffers they update are put back: the run
    stays the one an eager run makes.
    """
    # The warm-up makes the parameters' gradient accumulators on a side stream and the graphs keep them: torch then
    # warns (once) that each backward synchronises that stream with the default one. Expected; not shown.
    warnings.filterwarnings("ignore", "The AccumulateGrad node's stream does not match", UserWarning)
    eager_forward = model.forward
    buffers = [buffer.clone() for buffer in model.buffers()]
    with torch.autocast(inputs[0].device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
        torch.cuda.make_graphed_callables(model, inputs)
    with torch.no_grad():
        for buffer, saved in zip(model.buffers(), buffers):
            buffer.copy_(saved)
    return eager_forward
