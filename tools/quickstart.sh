#!/usr/bin/env bash
# The README's main command: on a fresh machine, a short real training of the Spherical U-Net on the synthetic
# default set (generated on first use), its evaluation as deployed (each test video in order, the model's own
# previous predictions) against the equator prior, the teacher-forced oracle figures apart, and a demo overlay.
# About 3-5 minutes on 2 CPU cores. Extra arguments go to the training command (e.g. -epochs 10, --device cuda,
# --exp-dir DIR); the run's folder (<exp-dir>/quickstart unless -expID is given) is replaced on each run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXP=quickstart
# The run's folder and data as the training parses them from the extra arguments (--exp-dir, -expID, --data-dir,
# --device): the evaluation, the demo and the check below read that run, not another one.
resolved=$("$PY" -c 'import sys, opts; o = opts.parse(sys.argv[1:]); print(o.exp_dir, o.expID, o.data_dir, o.device, sep="\n")' \
  -expID "$EXP" "$@")
{ read -r EXP_DIR; read -r EXP; read -r DATA_DIR; read -r DEVICE; } <<< "$resolved"
RUN=(-expID "$EXP" --exp-dir "$EXP_DIR" --data-dir "$DATA_DIR" --device "$DEVICE")

echo "== 1/4 environment"
bash tools/setup_env.sh

echo "== 2/4 training (32 x 64 frames, batch 8, 6 epochs of 10 steps; the synthetic set is generated on first use)"
"$PY" train_unet.py -expID "$EXP" --frame-h 32 --frame-w 64 --batch-size 8 -lr 0.03 -epochs 6 --max-steps 10 \
  --eval-interval 3 --save-interval 3 --overwrite "$@"

echo "== 3/4 evaluation on the test videos, as deployed (and the oracle, labelled)"
"$PY" train_unet.py "${RUN[@]}" -test --oracle

echo "== 4/4 demo: saliency overlay of a test frame"
frame=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1] + "/index.json"))["test"][0])' "$DATA_DIR")
frames=("$DATA_DIR/$frame/"*.jpg)
"$PY" train_unet.py "${RUN[@]}" -demo "${frames[-1]}"

"$PY" - "$EXP_DIR/$EXP" <<'EOF'
import json
import os
import sys

folder = sys.argv[1]
with open(os.path.join(folder, "log.jsonl")) as f:
    losses = [json.loads(line)["train_loss"] for line in f]
with open(os.path.join(folder, "test_metrics.json")) as f:
    report = json.load(f)
model, prior = report["model"], report["center_prior"]
better = [m for m in model if (model[m] < prior[m] if m == "KLD" else model[m] > prior[m])]
print(f"\ntrain loss by epoch: {', '.join(f'{v:.4g}' for v in losses)}")
print(f"deployed (own previous predictions): the model beats the equator prior on {len(better)} of {len(model)} "
      f"metrics ({', '.join(better) or 'none'})")
print("the oracle rows (ground-truth previous maps) are not deployed scores: see test_metrics.json['oracle']")
print(f"outputs: {folder} (checkpoints, log.jsonl, test_metrics.json, demo/*.png)")
if not losses[-1] < losses[0]:
    sys.exit("quickstart check FAILED: the training loss did not fall")
print("quickstart check passed (the loss fell; the scores above are what they are)")
EOF
