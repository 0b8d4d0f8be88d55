#!/usr/bin/env bash
# The original's spherical ConvLSTM baseline: sequences of 6 frames, batch 24, lr 3e-3, 200 epochs, a checkpoint
# every 10 epochs.
# Extra arguments are passed on (later ones win), e.g.  --data-dir /data/360_Saliency -expID lstm_real
# GPUs: those torch sees (CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists); more than one -> torchrun with
# one process per GPU (--batch-size is the global batch); none -> CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
args=(-expID baseline_convlstm --batch-size 24 -lr 3e-3 --sequence-len 6 -epochs 200 --save-interval 10 "$@")
if [ "$gpus" -gt 1 ]; then
  exec "$PY" -m torch.distributed.run --standalone --nproc_per_node "$gpus" train_lstm.py "${args[@]}"
fi
exec "$PY" train_lstm.py "${args[@]}"
