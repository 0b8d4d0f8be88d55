#!/usr/bin/env bash
# The U-Net baseline with the original's hyper-parameters (tools/baselines/baseline_unet.sh: batch 32, lr 0.3) for
# a bounded number of epochs on a synthetic set at 64 x 128, then the honest test table (deployed, and the oracle
# apart), a demo picture and the training curve. Everything is written under OUTDIR:
#
#   bash tools/gpu_baseline_check.sh OUTDIR [EPOCHS=20] [extra training arguments...]
#
#   OUTDIR/data/                         the synthetic set (8 videos x 60 frames, 64 x 128, <frame>_gt.npy at 2x)
#   OUTDIR/exp/<run>/log.jsonl, test_metrics.json, curve.png, demo/*.png, checkpoints
#   OUTDIR/summary.json                  per run: exit status, epochs done, seconds per epoch, device, test table
#
# Two runs: "original" (lr 0.3, the original's) and "lr0.03" (a tenth of it, for comparison when the first one
# diverges: the NaN guard stops it and the script goes on). About 4 minutes on one H100 with EPOCHS=20.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: tools/gpu_baseline_check.sh OUTDIR [EPOCHS] [extra training arguments]}
EPOCHS=${2:-20}
shift $(( $# >= 2 ? 2 : 1 ))
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATA="$OUT/data"
"$PY" -c "import ref, sys; from datasets.synthetic import ensure_synthetic; ensure_synthetic(sys.argv[1], **ref.synthetic)" \
  "$DATA" 2>/dev/null || exit 1
H=${FRAME_H:-64}
W=${FRAME_W:-128}
common=(--data-dir "$DATA" --exp-dir "$OUT/exp" --frame-h "$H" --frame-w "$W" -epochs "$EPOCHS" --eval-interval 5
        --save-interval "$EPOCHS")
frame=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1] + '/index.json'))['test'][0])" "$DATA")

for run in original lr0.03; do
  lr=$([ "$run" = original ] && echo 3e-1 || echo 3e-2)
  echo "== run $run: baseline_unet.sh, lr $lr, $EPOCHS epochs at ${H}x${W}"
  # --overwrite: a run of an earlier call in this OUTDIR is replaced (without it the training would refuse the folder
  # and the old checkpoint would be scored below).
  bash tools/baselines/baseline_unet.sh "${common[@]}" -expID "$run" -lr "$lr" --overwrite "$@" 2>&1 |
    grep -v "it/s]\|s/it]"
  echo "${PIPESTATUS[0]}" > "$OUT/exp/$run/train_status" 2>/dev/null || true
  if [ -f "$OUT/exp/$run/checkpoint_latest.pt" ]; then
    "$PY" train_unet.py "${common[@]}" -expID "$run" -test --oracle
    "$PY" train_unet.py "${common[@]}" -expID "$run" -demo "$DATA/$frame" --demo-out "$OUT/exp/$run/demo" >/dev/null
    "$PY" tools/plot_training.py "$OUT/exp/$run/log.jsonl" --out "$OUT/exp/$run/curve.png" \
      --title "U-Net, synthetic ${H}x${W}, batch 32, lr $lr"
  fi
done

"$PY" - "$OUT" <<'PYEOF'
import json
import os
import sys

out = sys.argv[1]
summary = {}
for run in ("original", "lr0.03"):
    folder = os.path.join(out, "exp", run)
    entry = {}
    status = os.path.join(folder, "train_status")
    if os.path.isfile(status):
        entry["train_exit_status"] = int(open(status).read().strip() or -1)
    log = os.path.join(folder, "log.jsonl")
    if os.path.isfile(log):
        records = [json.loads(line) for line in open(log)]
        entry["epochs_done"] = len(records)
        entry["seconds_per_epoch"] = [r["seconds"] for r in records]
        entry["train_loss"] = [r["train_loss"] for r in records]
        entry["device"] = records[-1]["device"]
    metrics = os.path.join(folder, "test_metrics.json")
    if os.path.isfile(metrics):
        entry["test"] = json.load(open(metrics))
    summary[run] = entry
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
print(json.dumps({run: {k: v for k, v in e.items() if k != "test"} for run, e in summary.items()}, indent=1))
PYEOF
