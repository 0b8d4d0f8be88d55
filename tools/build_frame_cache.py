"""Decode every frame of a dataset into the frame cache before training, in parallel (the original's `cache_map`,
done for frames).

Training fills the frame cache (``--gt-cache``) during its first epoch, which therefore decodes full-size JPEGs and
can leave the GPU waiting; every later epoch reads the 24 KiB arrays (benchmarks/RESULTS.md, "Data loading"). Run
this once with the training command's data flags and the first epoch reads the cache too:

    python tools/build_frame_cache.py --data-dir /data/360_Saliency -expID unet_full --num-workers 14
    bash tools/baselines/baseline_unet.sh --data-dir /data/360_Saliency -expID unet_full

It takes the training scripts' flags (``opts.py``; those that choose the frames and the cache matter:
``--data-dir``, ``--frame-h``, ``--frame-w``, ``--gt-cache``, ``--exp-dir``, ``-expID``, ``--video-train``,
``--frame-step``, ``--on-bad-data``) and decodes the frames of both splits with ``--num-workers`` processes. The
ConvLSTM's splits read the same frames for the same flags (its sequences run over them). Frames already cached are
not decoded again; nothing is written outside the cache folder. Prints how many frames were decoded and how many
were already there.
"""

import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import opts  # noqa: E402
from datasets.data import VRVideo  # noqa: E402
from engine.common import gt_cache_dir, load_datasets  # noqa: E402


class FrameFiles(Dataset):
    """Item ``i``: decode (or read back) frame ``i`` of the dataset into its cache; returns whether it was cached
    before."""

    def __init__(self, dataset, keys):
        self.dataset, self.keys = dataset, keys

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, index):
        vid, fid = self.keys[index]
        cached = self.dataset.frame_cached(vid, fid)
        if not cached:
            self.dataset.frame(vid, fid)  # decodes and writes the cache file
        return cached


def main(argv=None):
    opt = opts.parse(argv, model="unet")
    if gt_cache_dir(opt) is None:
        raise SystemExit("--gt-cache none: there is no cache to build; give a folder or leave the default")
    splits = load_datasets(opt, 0, 1, VRVideo)
    started, decoded, reused = time.perf_counter(), 0, 0
    for name, split in zip(("train", "test"), splits):
        split = getattr(split, "dataset", split)  # a FixedRotation (rotated evaluation) wraps the test split
        files = FrameFiles(split, list(dict.fromkeys(split.items)))
        loader = DataLoader(files, batch_size=16, num_workers=opt.num_workers, collate_fn=list)
        for batch in tqdm(loader, desc=f"{name} frames", unit="batch", total=len(loader)):
            reused += sum(batch)
            decoded += len(batch) - sum(batch)
    elapsed = time.perf_counter() - started
    print(
        f"frame cache {gt_cache_dir(opt)}: {decoded} frames decoded, {reused} already cached "
        f"({elapsed:.1f} s, {opt.num_workers} worker processes)"
    )
    return decoded, reused


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
