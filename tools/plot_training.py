"""Plot a training run's log.jsonl: train loss and test metrics per epoch, as a PNG (needs matplotlib).

    python tools/plot_training.py exp/baseline_unet/log.jsonl --out docs/unet_gpu_curve.png --title "..."
"""

import argparse
import json
import os
import tempfile


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="log.jsonl written by train_unet.py / train_lstm.py")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise SystemExit("tools/plot_training.py needs matplotlib: pip install matplotlib") from error

    with open(args.log) as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        raise SystemExit(f"{args.log} holds no epochs")
    epochs = [r["epoch"] for r in records]
    tested = [r for r in records if "test" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(epochs, [r["train_loss"] for r in records], marker="o", markersize=3)
    left.set(xlabel="epoch", ylabel="train loss (SphereMSE)", title="training loss")
    left.grid(alpha=0.3)
    for metric in ("CC", "SIM", "AUC-J", "sAUC"):
        right.plot([r["epoch"] for r in tested], [r["test"][metric] for r in tested], marker="o", label=metric)
    right.set(xlabel="epoch", ylabel="sphere-weighted score", title="test metrics")
    right.legend()
    right.grid(alpha=0.3)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(args.out))
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=folder)
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
