"""Train, evaluate (-test) or run (-demo) the Spherical U-Net saliency model.

    python train_unet.py -expID run1                 # the original's run (batch 32, lr 0.3, 200 epochs)
    python train_unet.py -expID run1 -resume         # continue a stopped run where it stopped
    torchrun --nproc_per_node 4 train_unet.py ...    # DistributedDataParallel; --batch-size is the global batch
    python train_unet.py -expID run1 -test           # scores on the test videos, run as deployed (+ --oracle)
    python train_unet.py -expID run1 -demo pano.jpg  # saliency maps (.npy) and heatmap overlays (.png)

This file is the U-Net's training loop, top to bottom; ``train_lstm.py`` is the ConvLSTM's. What both use lives in
``engine/``: checkpoints and datasets (``common``), processes and CUDA graphs (``distributed``), the test
(``evaluate``) and the demo (``demo``). One code path for 1 or N processes. See docs/training.md.
"""

import functools
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import opts
from datasets.data import VRVideo, atomic_write, atomic_write_bytes
from engine.common import (
    LATEST,
    check_run,
    check_splits,
    float32_precision,
    load_datasets,
    make_optimizer,
    nonfinite_tensors,
    rng_state,
    seed_everything,
    start_state,
    tensorboard_writer,
    training_loader,
    write_json,
)
from engine.demo import run_demo
from engine.distributed import capture_graphs, global_sum, setup_distributed, use_global_batch_norm
from engine.evaluate import evaluate, format_metrics, own_previous_maps, previous_map_tools, run_test
from engine.experiment import claim_experiment
from models import SphericalUNet
from sconv.module.smse import SphereMSE


def build_model(opt):
    return SphericalUNet(
        (opt.frame_h, opt.frame_w),
        use_spooling=opt.use_spooling,
        conv_type=opt.conv_type,
        kernel_basis=opt.kernel_basis,
        upsample=opt.upsample,
        frame_jitter=math.radians(opt.frame_jitter),
    )


def train(opt, rank, world_size, device):
    is_main = rank == 0
    check_run(opt, world_size, device)
    # --own-previous: training items carry the earlier frames their previous map is made from
    earlier = dict(earlier=opt.own_previous > 0, earlier_steps=opt.own_previous_steps)
    train_set, test_set = load_datasets(opt, rank, world_size, VRVideo, train_options=earlier)
    check_splits(opt, train_set, test_set)

    model = build_model(opt)
    if world_size > 1:
        use_global_batch_norm(model)  # before the optimizer is made: it must hold these modules' parameters
    model.to(device)
    optimizer = make_optimizer(opt, model)
    # SphereMSE: sum of A_i (out - target)^2 per item; nn.MSELoss (the ablation --use-smse 0) is the mean over
    # pixels, about 4 pi times smaller for the same error.
    criterion = SphereMSE(opt.frame_h, opt.frame_w) if opt.use_smse else nn.MSELoss()
    latest = os.path.join(opt.save_dir, LATEST)
    start_epoch, log = start_state(opt, model, optimizer, latest, is_main)

    raw_model = model
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loader, sampler = training_loader(opt, train_set, rank, world_size, device)
    writer = tensorboard_writer(opt) if is_main else None
    if is_main:
        os.makedirs(opt.save_dir, exist_ok=True)
        write_json(os.path.join(opt.save_dir, "opts.json"), vars(opt))
        print(
            f"unet: {sum(p.numel() for p in raw_model.parameters()):,} parameters, {len(train_set)} train frames, "
            f"{world_size} process(es) on {device}, global batch {opt.batch_size}"
        )

    steps_per_epoch = len(loader) if not opt.max_steps else min(len(loader), opt.max_steps)
    normalise_own = previous_map_tools(opt.frame_h, opt.frame_w)[1]  # --own-previous: as -test makes previous maps
    graphed_shape = eager_forward = None  # --cuda-graph: the captured batch shape, and the model's own forward
    for epoch in range(start_epoch, opt.epochs):
        sampler.set_epoch(epoch)
        model.train()
        started = time.time()
        totals = torch.zeros(2, dtype=torch.float64)  # sum of per-frame losses, frames
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{opt.epochs}", disable=not is_main or None)
        for step, (frames, previous_maps, targets, *earlier) in enumerate(bar):
            if step == steps_per_epoch:
                break
            frames = frames.to(device, non_blocking=True)
            previous_maps = previous_maps.to(device, non_blocking=True)
            if opt.own_previous:  # deployment's previous map, made over up to K earlier frames, for a random share
                earlier_frames, start_maps, counts = earlier
                rows = ((counts > 0) & (torch.rand(len(frames)) < opt.own_previous)).nonzero()[:, 0]  # host: no sync
                if len(rows):  # only the chosen items' own maps are made
                    own = own_previous_maps(
                        raw_model,
                        earlier_frames[rows].to(device, non_blocking=True),
                        start_maps[rows].to(device, non_blocking=True),
                        counts[rows],
                        opt,
                        normalise_own,
                    )
                    previous_maps = previous_maps.index_copy(0, rows.to(device), own)
            # The original's scaling: maps (on its scale) x 10 into the network and the loss.
            previous_maps = previous_maps * opt.target_scale
            targets = targets.to(device, non_blocking=True) * opt.target_scale
            forward = model
            if opt.cuda_graph:
                if graphed_shape is None:
                    eager_forward = capture_graphs(raw_model, (frames, previous_maps), opt.bf16)
                    graphed_shape = frames.shape
                forward = model if frames.shape == graphed_shape else eager_forward
            # A graphed model runs under autocast only with its cache of cast weights off.
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opt.bf16, cache_enabled=not opt.cuda_graph):
                out = forward(frames, previous_maps)
            loss = criterion(out.float(), targets)
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
        # The loss guard above checks each update at the next step; the epoch's last update is checked here, on the
        # weights about to be saved: finite tensors, and a finite loss of the last batch in eval mode (as -test runs).
        diverged = nonfinite_tensors(raw_model, optimizer)
        if not diverged:
            model.eval()
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=opt.bf16):
                out = raw_model(frames, previous_maps)
            check = criterion(out.float(), targets)
            check = global_sum(torch.tensor([check.item() * len(frames)], dtype=torch.float64), world_size)
            diverged = [] if math.isfinite(check.item()) else [f"the loss of the last batch ({check.item()})"]
        if diverged:
            raise SystemExit(
                f"error: the weights after epoch {epoch + 1} have diverged ({', '.join(diverged[:3])}): not saved. "
                f"The last good checkpoint is kept"
                f"{': ' + latest if os.path.isfile(latest) else ' (none was written yet)'}. Lower -lr or check the "
                "data."
            )
        evaluate_now = opt.eval_interval and ((epoch + 1) % opt.eval_interval == 0 or epoch + 1 == opt.epochs)
        if is_main and evaluate_now:
            record["test"] = evaluate(raw_model, test_set, opt, device)["model"]  # deployed, not the oracle
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
                summary += "\n" + format_metrics("model", record["test"])
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


def main(argv=None):
    opt = opts.parse(argv, model="unet")
    rank, world_size, device = setup_distributed(opt.device)
    try:
        with float32_precision(device, opt.tf32):
            seed_everything(opt.seed)  # same seed in every process: same initial weights
            if opt.test and rank == 0:
                return run_test(opt, device, build_model, lambda: load_datasets(opt, 0, 1, VRVideo)[1])
            if opt.demo and rank == 0:
                return run_demo(opt, device, build_model)
            if not (opt.test or opt.demo):
                with claim_experiment(opt, rank):
                    train(opt, rank, world_size, device)
            return None
    finally:
        if world_size > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
