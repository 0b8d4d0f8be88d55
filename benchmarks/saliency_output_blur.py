"""Diagnostic: are a network's saliency maps too sharp? CC as deployed with the scored map blurred.

For each run of a ``saliency_ordering.py`` folder, loads a checkpoint, runs the test videos as deployed
(``engine.evaluate.predict_video``: the model's own previous maps, fed back unblurred) and scores the sphere-weighted CC
of each prediction blurred by a Gaussian of ``--sigmas`` pixels (separable, circular in longitude, edge-replicated in
latitude: a pixel-grid blur, not a spherical one). Sigma 0 is the score ``-test`` gives. A network whose CC rises with
a small blur makes maps with detail the ground truth lacks. The best sigma is chosen here on the test videos, so any
gain is an upper bound, not a deployable score. Writes ``saliency_output_blur.json`` into ``--out``.

Usage (from the repository root; after the trailing ``--``, the flags the runs were trained with that change the test
set, e.g. the frame size and ``--use-equirect-rotate``):
    python benchmarks/saliency_output_blur.py --out /tmp/order --checkpoint checkpoint_epoch0030.pt -- \
        --frame-h 32 --frame-w 64 --use-equirect-rotate
"""

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import opts  # noqa: E402
from datasets.data import VRVideo, atomic_write_bytes  # noqa: E402
from engine.common import test_keys  # noqa: E402
from engine.evaluate import load_trained, predict_video  # noqa: E402
from sconv import metrics  # noqa: E402
from train_unet import build_model, load_datasets  # noqa: E402


def gaussian_blur(maps, sigma):
    """``maps [N, H, W]`` blurred by a Gaussian of ``sigma`` pixels (truncated at 3 sigma), circular in longitude,
    edge-replicated in latitude; ``sigma`` 0 returns ``maps``."""
    if sigma == 0:
        return maps
    radius = int(3 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(maps[:, None], (radius, radius, 0, 0), mode="circular")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(x, kernel.view(1, 1, -1, 1))[:, 0]


def blurred_cc(out, run, checkpoint, sigmas, flags):
    """Mean CC over the test frames of run ``run``'s ``checkpoint``, for each sigma; and the checkpoint's epoch."""
    exp_dir = os.path.join(out, "exp")
    argv = ["-expID", run, "--exp-dir", exp_dir, "--data-dir", os.path.join(out, "synthetic"), "-test"]
    opt = opts.parse(argv + ["-loadModel", os.path.join(exp_dir, run, checkpoint), *flags], model="unet")
    device = torch.device("cpu")
    model, _, epoch = load_trained(opt, device, build_model)
    test_set = load_datasets(opt, 0, 1, VRVideo)[1]
    videos = {}
    for vid, fid in test_keys(test_set, opt.limit):
        videos.setdefault(vid, []).append(fid)
    totals, frames = dict.fromkeys(sigmas, 0.0), 0
    for vid, fids in videos.items():
        gt = torch.stack([test_set.target(vid, fid)[0] for fid in fids]).double()
        steps = ((fid, test_set.frame(vid, fid), test_set.previous_key(vid, fid)) for fid in fids)
        predictions = torch.stack([p[0] for _, p, _ in predict_video(model, steps, opt, device)]).double()
        for sigma in sigmas:
            totals[sigma] += float(metrics.cc(gaussian_blur(predictions, sigma), gt).sum())
        frames += len(fids)
    return epoch, {sigma: total / frames for sigma, total in totals.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="a saliency_ordering.py output folder (read; the JSON goes here)")
    parser.add_argument("--checkpoint", default="checkpoint_latest.pt", help="file name in each run's folder")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="after --: the runs' train_unet.py test-set flags")
    args = parser.parse_args(argv)
    flags = [a for a in args.flags if a != "--"]
    if min(args.sigmas) < 0:
        parser.error(f"--sigmas must be >= 0, got {args.sigmas}")
    runs = sorted(os.listdir(os.path.join(args.out, "exp")))
    result = {"checkpoint": args.checkpoint, "flags": flags, "runs": {}}
    for run in runs:
        epoch, cc = blurred_cc(args.out, run, args.checkpoint, args.sigmas, flags)
        result["runs"][run] = {"epoch": epoch, "cc_by_sigma_px": {str(s): v for s, v in cc.items()}}
        print(run, f"epoch {epoch}:", "  ".join(f"sigma {s:g}: CC {v:.4f}" for s, v in cc.items()), flush=True)
    atomic_write_bytes(os.path.join(args.out, "saliency_output_blur.json"), json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    main()
