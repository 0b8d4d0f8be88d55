#!/usr/bin/env bash
# The original's Spherical U-Net baseline: batch 32, lr 3e-1, 200 epochs, a checkpoint every 10 epochs.
# Extra arguments are passed on (later ones win), e.g.  --data-dir /data/360_Saliency -expID unet_real
# GPUs: those torch sees (CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists); more than one -> torchrun with
# one process per GPU (--batch-size is the global batch); none -> CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
args=(-expID baseline_unet --batch-size 32 -lr 3e-1 -epochs 200 --save-interval 10 "$@")
if [ "$gpus" -gt 1 ]; then
  exec "$PY" -m torch.distributed.run --standalone --nproc_per_node "$gpus" train_unet.py "${args[@]}"
fi
exec "$PY" train_unet.py "${args[@]}"
