"""Defaults of the scripts (``opts.py`` reads them): where data and experiments live, and the original's settings.

Paths are relative to this repository. ``data_dir`` is a synthetic set that the scripts generate on first use when
nothing is there, so every script runs on a fresh machine; point ``--data-dir`` at the real dataset for real runs.
"""

import math
import os

root_dir = os.path.dirname(os.path.abspath(__file__))
data_dir = os.path.join(root_dir, "data", "synthetic")
exp_dir = os.path.join(root_dir, "exp")

# The synthetic set made in data_dir when it is empty (datasets.synthetic.ensure_synthetic's arguments).
synthetic = dict(videos=8, frames=60, height=64, width=128, seed=0)

# Frames are resized to frame_h x frame_w (the original trained at 64 x 128).
frame_h, frame_w = 64, 128
frame_step = 1  # every frame is an item, as the original's VRVideo (it lists every jpg)
prev_offset = 5  # the previous map is that of the frame 5 earlier (the original's frame_interval)
video_train = 80  # without an index.json, the original's split: a seeded sample of 80 training videos
gaussian_sigma = math.pi / 20  # saliency maps: spherical Gaussian of this width around every gaze point

# The original's optimiser and target scaling: SGD, momentum 0.9, weight decay 1e-5; the previous and target
# maps, on the original's scale (a density of about 0.04 at most at 64 x 128: docs/data.md), are multiplied by 10
# before entering the network and the loss (its train_unet.py / train_lstm.py: `last_batch * 10`, `target_batch * 10`).
momentum = 0.9
weight_decay = 1e-5
target_scale = 10.0

# The original's baseline runs (tools/baselines/*.sh).
hyper = {
    "unet": dict(batch_size=32, lr=3e-1, epochs=200, sequence_len=1),
    "convlstm": dict(batch_size=24, lr=3e-3, epochs=200, sequence_len=6),
}
save_interval = 10
eval_interval = 5
num_workers = 2
seed = 367643
