"""Train, evaluate (-test) or run (-demo) the Spherical U-Net saliency model.

    python train_unet.py -expID run1                 # the original's run (batch 32, lr 0.3, 200 epochs)
    python train_unet.py -expID run1 -resume         # continue a stopped run where it stopped
    torchrun --nproc_per_node 4 train_unet.py ...    # DistributedDataParallel; --batch-size is the global batch
    python train_unet.py -expID run1 -test           # sphere metrics of the latest checkpoint + a centre prior
    python train_unet.py -expID run1 -demo pano.jpg  # saliency maps (.npy) and heatmap overlays (.png)

``train_lstm.py`` is the same script for the ConvLSTM model (``main(model="convlstm")``): everything below handles
both, a batch being ``[B, ...]`` frames for the U-Net and ``[B, T, ...]`` sequences for the ConvLSTM.
One code path for 1 or N processes. See docs/training.md.
"""

import contextlib
import functools
import json
import math
import os
import random
import sys
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.distributed.nn.functional import all_reduce
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

import opts
import ref
from datasets.data import VRVideo, VRVideoLSTM, atomic_write, atomic_write_bytes, center_prior
from datasets.synthetic import ensure_synthetic
from models import SphericalConvLSTMNet, SphericalUNet
from sconv import metrics
from sconv.module.smse import SphereMSE

METRICS = ("CC", "NSS", "KLD", "SIM", "AUC-J", "AUC-B", "sAUC")
# Options that define the network: -test and -demo take them from the checkpoint, not from the command line.
ARCH_OPTIONS = ("frame_h", "frame_w", "target_scale", "use_sconv", "use_spooling", "use_sconvlstm")
LATEST = "checkpoint_latest.pt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


# ---------------------------------------------------------------------------------------------------------------
# Processes and devices


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


# ---------------------------------------------------------------------------------------------------------------
# Files: written atomically (datasets.data.atomic_write: a temporary file in the same folder, then os.replace)


def write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def rng_state():
    """Every random state a run depends on, as tensors and builtins (``torch.load(weights_only=True)`` reads it)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path, model_name):
    """A checkpoint written by ``train`` (tensors and builtins: ``weights_only=True``), checked for ``model_name``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not {"model", "epoch", "opts"} <= checkpoint.keys():
        raise ValueError(f"{path} is not a checkpoint of these scripts (no model/epoch/opts entries)")
    if checkpoint["opts"].get("model") != model_name:
        raise ValueError(f"{path} holds a {checkpoint['opts'].get('model')!r} model, this script trains {model_name!r}")
    return checkpoint


# ---------------------------------------------------------------------------------------------------------------
# Data and model


def load_datasets(opt, rank, world_size):
    """The train and test splits; the default synthetic set is generated first when absent (by rank 0)."""
    if os.path.abspath(opt.data_dir) == os.path.abspath(ref.data_dir):
        if rank == 0:
            ensure_synthetic(opt.data_dir, **ref.synthetic)
        if world_size > 1:
            dist.barrier()
    # The split: index.json when the folder has one, else the original's seeded sample of --video-train videos.
    index_file = os.path.join(opt.data_dir, "index.json")
    common = dict(
        frame_interval=opt.frame_interval,
        gaussian_sigma=ref.gaussian_sigma,
        index_file=index_file if os.path.isfile(index_file) else None,
    )
    if opt.model == "convlstm":
        common["sequence_len"] = opt.sequence_len
    dataset = VRVideo if opt.model == "unet" else VRVideoLSTM
    train_set = dataset(opt.data_dir, opt.frame_h, opt.frame_w, opt.video_train, train=True, **common)
    test_set = dataset(opt.data_dir, opt.frame_h, opt.frame_w, opt.video_train, train=False, **common)
    return train_set, test_set


def build_model(opt):
    size = (opt.frame_h, opt.frame_w)
    if opt.model == "unet":
        return SphericalUNet(size, use_sconv=opt.use_sconv, use_spooling=opt.use_spooling)
    return SphericalConvLSTMNet(
        size, use_sconv=opt.use_sconv, use_spooling=opt.use_spooling, use_sconvlstm=opt.use_sconvlstm
    )


def predict(model, frames, previous_maps, opt, device):
    """Saliency logits shaped like the targets, float32: ``[B, 1, H, W]`` or ``[B, T, 1, H, W]`` (ConvLSTM)."""
    # A graphed model (--cuda-graph) runs under autocast only with its cache of cast weights off.
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opt.bf16, cache_enabled=not opt.cuda_graph):
        out = model(frames, previous_maps * opt.target_scale)
    if opt.model == "convlstm":
        out = out[0]
    return out.float()


def capture_graphs(model, frames, previous_maps, opt):
    """Capture ``model``'s forward and backward on this batch's shapes in CUDA graphs, with
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
    with torch.autocast(frames.device.type, dtype=torch.bfloat16, enabled=opt.bf16, cache_enabled=False):
        torch.cuda.make_graphed_callables(model, (frames, previous_maps * opt.target_scale))
    with torch.no_grad():
        for buffer, saved in zip(model.buffers(), buffers):
            buffer.copy_(saved)
    return eager_forward


def saliency_loss(criterion, out, target, opt):
    """The original's loss: ``criterion`` on the scaled targets; summed over the T frames of a sequence."""
    steps = out.shape[1] if opt.model == "convlstm" else 1
    target = target.reshape(-1, *target.shape[-3:]) * opt.target_scale
    return criterion(out.reshape(-1, *out.shape[-3:]), target) * steps


def normalise(maps):
    """Min-max normalise each ``[..., H, W]`` map to [0, 1] (how the prediction is scored: logits may be negative)."""
    low = maps.amin((-2, -1), keepdim=True)
    high = maps.amax((-2, -1), keepdim=True)
    return (maps - low) / (high - low).clamp(min=torch.finfo(maps.dtype).tiny)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


def frame_keys(dataset, index):
    """``(video, frame)`` of each frame of item ``index`` (one for VRVideo, T for VRVideoLSTM)."""
    item = dataset.items[index]
    return [item] if isinstance(dataset, VRVideo) else list(item)


def score(pred, gt, fixations, other_fixations, generator):
    """Sphere-weighted metrics of ``pred [N, H, W]`` (any real values), per frame: name -> ``[N]`` float64."""
    pred = normalise(pred.double())
    return {
        "CC": metrics.cc(pred, gt),
        "NSS": metrics.nss(pred, fixations),
        "KLD": metrics.kld(pred, gt),
        "SIM": metrics.sim(pred, gt),
        "AUC-J": metrics.auc_judd(pred, fixations),
        "AUC-B": metrics.auc_borji(pred, fixations, generator=generator),
        "sAUC": metrics.sauc(pred, fixations, other_fixations),
    }


@torch.no_grad()
def evaluate(model, dataset, opt, device, with_baselines=False):
    """Mean sphere-weighted metrics over the test frames (the first ``--limit`` items): ``{"model": {...}}``, plus
    two references when asked: ``"center_prior"`` (the dataset's equator prior) and ``"previous_map"`` (the ground
    truth of the frame before, which the model receives as input: what copying it scores). sAUC's negatives are the
    fixations of the evaluated frames of the other videos (of the other frames when there is a single video).
    Deterministic: AUC-Borji draws from its own generator.
    """
    count = min(len(dataset), opt.limit) if opt.limit else len(dataset)
    if count == 0:
        raise ValueError("the test split is empty: nothing to evaluate")
    indices = list(range(count))
    fixations_of = {}  # (video, frame) -> fixation counts [H, W]
    for index in indices:
        maps = dataset.fixations(index).reshape(-1, opt.frame_h, opt.frame_w)
        for key, fixations in zip(frame_keys(dataset, index), maps):
            fixations_of[key] = torch.from_numpy(fixations).double()
    if len(fixations_of) < 2:
        raise ValueError(f"sAUC needs the fixations of at least 2 test frames; --limit {opt.limit} leaves 1")
    per_video = {}
    for (video, _), fixations in fixations_of.items():
        per_video[video] = per_video.get(video, 0) + fixations
    everything = sum(per_video.values())

    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(opt.seed)
    # Its own generator: creating a loader draws a seed, and evaluating must leave the training's RNG untouched.
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=opt.batch_size,
        num_workers=opt.num_workers,
        generator=torch.Generator().manual_seed(opt.seed),
    )
    totals, frames_scored, position = {}, 0, 0
    prior = torch.from_numpy(center_prior(opt.frame_h, opt.frame_w)).double()
    for frames, previous_maps, targets in tqdm(loader, desc="evaluate", leave=False, disable=None):
        keys = [key for index in indices[position : position + len(frames)] for key in frame_keys(dataset, index)]
        position += len(frames)
        out = predict(model, frames.to(device), previous_maps.to(device), opt, device)
        pred = out.reshape(-1, opt.frame_h, opt.frame_w).cpu()
        gt = targets.reshape(-1, opt.frame_h, opt.frame_w).double()
        fixations = torch.stack([fixations_of[key] for key in keys])
        others = torch.stack(
            [
                everything - (per_video[video] if len(per_video) > 1 else fixations_of[video, frame])
                for video, frame in keys
            ]
        )
        results = {"model": score(pred, gt, fixations, others, generator)}
        if with_baselines:
            results["center_prior"] = score(prior.expand_as(gt), gt, fixations, others, generator)
            previous = previous_maps.reshape(-1, opt.frame_h, opt.frame_w)
            results["previous_map"] = score(previous, gt, fixations, others, generator)
        for name, values in results.items():
            for metric, per_frame in values.items():
                totals.setdefault(name, {}).setdefault(metric, 0.0)
                totals[name][metric] += float(per_frame.sum())
        frames_scored += len(keys)
    model.train(was_training)
    return {name: {key: total / frames_scored for key, total in values.items()} for name, values in totals.items()}


def format_metrics(name, values):
    return f"{name:>13s}  " + "  ".join(f"{metric} {values[metric]:.4f}" for metric in METRICS)


# ---------------------------------------------------------------------------------------------------------------
# Training


def train(opt, rank, world_size, device):
    is_main = rank == 0
    if opt.batch_size % world_size:
        raise ValueError(f"--batch-size {opt.batch_size} must be divisible by the number of processes ({world_size})")
    train_set, test_set = load_datasets(opt, rank, world_size)
    if len(train_set) == 0:
        raise ValueError(f"the training split of {opt.data_dir} has no items")
    if opt.cuda_graph and (device.type != "cuda" or world_size > 1):
        raise ValueError(f"--cuda-graph needs one process on a CUDA device; this run has {world_size} on {device}")

    model = build_model(opt)
    if world_size > 1:
        use_global_batch_norm(model)  # before the optimizer is made: it must hold these modules' parameters
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    # SphereMSE: sum of A_i (out - target)^2 per item; nn.MSELoss (the ablation, as the original) is the mean over
    # pixels, about 4 pi times smaller for the same error.
    criterion = SphereMSE(opt.frame_h, opt.frame_w) if opt.use_smse else nn.MSELoss()
    latest = os.path.join(opt.save_dir, LATEST)
    start_epoch, log = 0, []
    if opt.resume:
        checkpoint = load_checkpoint(latest, opt.model)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = opt.lr  # the command line wins (same command: same value)
        set_rng_state(checkpoint["rng"])
        start_epoch = checkpoint["epoch"]
        log_path = os.path.join(opt.save_dir, "log.jsonl")
        if os.path.isfile(log_path):
            with open(log_path) as f:
                log = [record for record in map(json.loads, f) if record["epoch"] <= start_epoch]
        if is_main:
            print(f"resuming {latest} after epoch {start_epoch}")
    elif opt.loadModel:
        model.load_state_dict(load_checkpoint(opt.loadModel, opt.model)["model"])

    raw_model = model
    if world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=opt.seed)
    loader = DataLoader(
        train_set,
        batch_size=opt.batch_size // world_size,
        sampler=sampler,
        num_workers=opt.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=opt.num_workers > 0,  # started once, not at every epoch
    )
    writer = None
    if is_main and opt.use_tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(os.path.join(opt.save_dir, "tensorboard"))
        except ImportError:
            print("warning: --use_tensorboard needs the tensorboard package (pip install tensorboard); not used")
    if is_main:
        os.makedirs(opt.save_dir, exist_ok=True)
        write_json(os.path.join(opt.save_dir, "opts.json"), vars(opt))
        print(
            f"{opt.model}: {sum(p.numel() for p in raw_model.parameters()):,} parameters, {len(train_set)} train / "
            f"{len(test_set)} test items, {world_size} process(es) on {device}, global batch {opt.batch_size}"
        )

    steps_per_epoch = len(loader) if not opt.max_steps else min(len(loader), opt.max_steps)
    graphed_shape = eager_forward = None  # --cuda-graph: the captured batch shape, and the model's own forward
    for epoch in range(start_epoch, opt.epochs):
        sampler.set_epoch(epoch)
        model.train()
        started = time.time()
        totals = torch.zeros(2, dtype=torch.float64)  # sum of per-item losses, items
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{opt.epochs}", disable=not is_main or None)
        for step, (frames, previous_maps, targets) in enumerate(bar):
            if step == steps_per_epoch:
                break
            frames, previous_maps, targets = (t.to(device, non_blocking=True) for t in (frames, previous_maps, targets))
            forward = model
            if opt.cuda_graph:
                if graphed_shape is None:
                    eager_forward = capture_graphs(raw_model, frames, previous_maps, opt)
                    graphed_shape = frames.shape
                forward = model if frames.shape == graphed_shape else eager_forward
            out = predict(forward, frames, previous_maps, opt, device)
            loss = saliency_loss(criterion, out, targets, opt)
            batch = global_sum(torch.tensor([loss.item() * len(frames), len(frames)], dtype=torch.float64), world_size)
            batch_loss = (batch[0] / batch[1]).item()
            if not math.isfinite(batch_loss):
                raise SystemExit(
                    f"error: the training loss is {batch_loss} at epoch {epoch + 1}, step {step + 1}: stopping before "
                    f"the weights are updated. The last good checkpoint is kept"
                    f"{': ' + latest if os.path.isfile(latest) else ' (none was written yet)'}. Lower -lr or check "
                    "the data."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals += batch
            bar.set_postfix(loss=f"{batch_loss:.4g}")
        record = {
            "epoch": epoch + 1,
            "train_loss": (totals[0] / totals[1]).item(),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.time() - started, 3),
            "steps": steps_per_epoch,
            "processes": world_size,
            "device": str(device),
        }
        evaluate_now = opt.eval_interval and ((epoch + 1) % opt.eval_interval == 0 or epoch + 1 == opt.epochs)
        if is_main and evaluate_now:
            record["test"] = evaluate(raw_model, test_set, opt, device)["model"]
        if is_main:
            log.append(record)
            lines = "".join(json.dumps(r) + "\n" for r in log)
            atomic_write_bytes(os.path.join(opt.save_dir, "log.jsonl"), lines.encode())
            checkpoint = {
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "opts": vars(opt),
                "rng": rng_state(),
                "train_loss": record["train_loss"],
            }
            atomic_write(latest, functools.partial(torch.save, checkpoint))
            if (epoch + 1) % opt.save_interval == 0:
                periodic = os.path.join(opt.save_dir, f"checkpoint_epoch{epoch + 1:04d}.pt")
                atomic_write(periodic, functools.partial(torch.save, checkpoint))
            summary = f"epoch {epoch + 1}: train loss {record['train_loss']:.5g} ({record['seconds']:.1f} s)"
            if "test" in record:
                summary += "\n" + format_metrics("test", record["test"])
            tqdm.write(summary)
            if writer is not None:
                writer.add_scalar("train/loss", record["train_loss"], epoch + 1)
                for metric, value in record.get("test", {}).items():
                    writer.add_scalar(f"test/{metric}", value, epoch + 1)
                writer.flush()
        if world_size > 1:
            dist.barrier()  # the other processes wait for rank 0's evaluation and checkpoint
    if writer is not None:
        writer.close()


# ---------------------------------------------------------------------------------------------------------------
# -test and -demo


def load_trained(opt, device):
    """The model of ``-loadModel`` (default: the experiment's latest checkpoint), with the checkpoint's settings."""
    path = opt.loadModel or os.path.join(opt.save_dir, LATEST)
    checkpoint = load_checkpoint(path, opt.model)
    for name in ARCH_OPTIONS:
        setattr(opt, name, checkpoint["opts"][name])
    model = build_model(opt)
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), path, checkpoint["epoch"]


def run_test(opt, device):
    model, path, epoch = load_trained(opt, device)
    _, test_set = load_datasets(opt, 0, 1)
    results = evaluate(model, test_set, opt, device, with_baselines=True)
    items = min(len(test_set), opt.limit) if opt.limit else len(test_set)
    report = {
        "checkpoint": os.path.abspath(path),
        "epoch": epoch,
        "test_items": items,
        "device": str(device),
        "metrics": "sphere-weighted",
        **results,
    }
    os.makedirs(opt.save_dir, exist_ok=True)
    out_path = os.path.join(opt.save_dir, "test_metrics.json")
    write_json(out_path, report)
    print(f"{opt.model} after {epoch} epochs, {items} test items (sphere-weighted):")
    print(format_metrics("model", results["model"]))
    print(format_metrics("center prior", results["center_prior"]))
    print(format_metrics("previous map", results["previous_map"]))
    print(f"written to {out_path}")
    return report


def read_demo_frames(path):
    """``(name, RGB PIL image)`` of an image file, of the images in a folder (sorted by name), or of a video file."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise ValueError(f"-demo folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        for name in names:
            with Image.open(os.path.join(path, name)) as image:
                yield os.path.splitext(name)[0], image.convert("RGB")
    elif os.path.isfile(path) and path.lower().endswith(IMAGE_SUFFIXES):
        with Image.open(path) as image:
            yield os.path.splitext(os.path.basename(path))[0], image.convert("RGB")
    elif os.path.isfile(path):
        try:
            import cv2
        except ImportError:
            raise ValueError(
                f"-demo {path} is not an image ({', '.join(IMAGE_SUFFIXES)}); reading it as a video needs OpenCV "
                "(pip install opencv-python-headless), or extract its frames into a folder"
            ) from None
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise ValueError(f"-demo {path}: OpenCV cannot open it as a video")
        try:
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield f"frame_{index:06d}", Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
                index += 1
        finally:
            capture.release()
        if index == 0:
            raise ValueError(f"-demo {path}: the video has no readable frame")
    else:
        raise FileNotFoundError(f"-demo {path}: no such file or folder")


# Colormap anchors (position, RGB): dark blue -> blue -> cyan -> yellow -> red -> dark red, like "jet".
COLORMAP = (
    (0.0, (0, 0, 128)),
    (0.125, (0, 0, 255)),
    (0.375, (0, 255, 255)),
    (0.625, (255, 255, 0)),
    (0.875, (255, 0, 0)),
    (1.0, (128, 0, 0)),
)


def colorize(values):
    """RGB uint8 ``[H, W, 3]`` of ``values`` in [0, 1] through ``COLORMAP`` (piecewise linear)."""
    positions = [p for p, _ in COLORMAP]
    channels = [np.interp(values, positions, [c[k] for _, c in COLORMAP]) for k in range(3)]
    return np.stack(channels, -1).round().astype(np.uint8)


def overlay(image, saliency, strength=0.6):
    """The heatmap of ``saliency`` (``[h, w]`` in [0, 1]) blended over ``image`` at the image's size: each pixel
    takes ``strength * saliency`` of the heatmap colour, so the panorama shows through where nothing is salient."""
    resized = np.asarray(Image.fromarray(saliency.astype(np.float32)).resize(image.size, Image.Resampling.BILINEAR))
    resized = np.clip(resized, 0, 1)
    alpha = strength * resized[..., None]
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colorize(resized)
    return Image.fromarray(blended.round().astype(np.uint8))


@torch.no_grad()
def run_demo(opt, device):
    """Saliency of each frame of ``-demo``: ``<name>.npy`` (``[H, W]`` float32 in [0, 1], the model's size) and
    ``<name>.png`` (overlay at the input's size). Frames are treated as a sequence: the first one's previous map is
    the centre prior, the next ones' the prediction for the frame before (the ConvLSTM also carries its state)."""
    model, path, _ = load_trained(opt, device)
    out_dir = opt.demo_out or os.path.join(opt.save_dir, "demo")
    os.makedirs(out_dir, exist_ok=True)
    previous = torch.from_numpy(center_prior(opt.frame_h, opt.frame_w)).to(device)
    hidden_state, written = None, []
    for name, image in tqdm(read_demo_frames(opt.demo), desc="demo", unit="frame", disable=None):
        small = image.resize((opt.frame_w, opt.frame_h), Image.Resampling.BILINEAR)
        frame = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opt.bf16):
            if opt.model == "unet":
                out = model(frame[None], previous[None, None] * opt.target_scale)
            else:
                previous_maps = previous[None, None, None] * opt.target_scale
                out, hidden_state = model(frame[None, None], previous_maps, hidden_state)
        saliency = normalise(out.float().reshape(opt.frame_h, opt.frame_w))
        array = saliency.cpu().numpy()
        atomic_write(os.path.join(out_dir, name + ".npy"), lambda f, a=array: np.save(f, a, allow_pickle=False))
        picture = overlay(image, array)
        atomic_write(os.path.join(out_dir, name + ".png"), lambda f, p=picture: p.save(f, format="PNG"))
        written.append(name)
        previous = saliency
    print(f"{len(written)} saliency map(s) from {path} written to {out_dir} (.npy and .png overlays)")
    return out_dir, written


# ---------------------------------------------------------------------------------------------------------------


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def float32_precision(device, tf32):
    """On CUDA, float32 matrix products, convolutions and the crown kernels on TF32 tensor cores (``tf32``) or in full
    float32; the previous settings are put back on exit (``main`` may be called from other code)."""
    if device.type != "cuda":
        yield
        return
    previous = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous[0])
        torch.backends.cudnn.allow_tf32 = previous[1]


def main(argv=None, model="unet"):
    opt = opts.parse(argv, model=model)
    rank, world_size, device = setup_distributed(opt.device)
    try:
        with float32_precision(device, opt.tf32):
            return run(opt, rank, world_size, device)
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def run(opt, rank, world_size, device):
    """Train, or evaluate (-test) or run (-demo) on rank 0."""
    seed_everything(opt.seed)  # same seed in every process: same initial weights
    if opt.test or opt.demo:
        if rank == 0:
            return run_test(opt, device) if opt.test else run_demo(opt, device)
        return None
    train(opt, rank, world_size, device)
    return None


if __name__ == "__main__":
    main(sys.argv[1:])
