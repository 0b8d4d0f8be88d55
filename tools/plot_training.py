"""Plot a training run's log.jsonl: train loss and test metrics per epoch, as a PNG (matplotlib; without it, a plain
PIL drawing of the same two panels).

    python tools/plot_training.py exp/baseline_unet/log.jsonl --out docs/unet_gpu_curve.png --title "..."
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.data import atomic_write  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="log.jsonl written by train_unet.py / train_lstm.py")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args(argv)
    with open(args.log) as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        raise SystemExit(f"{args.log} holds no epochs")
    epochs = [r["epoch"] for r in records]
    tested = [r for r in records if "test" in r]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        draw_with_pil(records, tested, args.out, args.title)
        print(f"wrote {args.out} (matplotlib is not installed: a plain PIL drawing)")
        return
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
    atomic_write(args.out, lambda f: fig.savefig(f, dpi=110, format="png"))
    print(f"wrote {args.out}")


def draw_with_pil(records, tested, out, title):
    """The two panels with PIL only: lines through the points, min and max of each axis written at its ends."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1000, 400), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 5), title, fill="black")
    colours = {"train loss": "black", "CC": "blue", "SIM": "green", "AUC-J": "red", "sAUC": "purple"}
    panels = (
        (50, {"train loss": [(r["epoch"], r["train_loss"]) for r in records]}),
        (550, {m: [(r["epoch"], r["test"][m]) for r in tested] for m in ("CC", "SIM", "AUC-J", "sAUC")}),
    )
    for left, series in panels:
        points = [p for values in series.values() for p in values]
        if not points:
            continue
        x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
        y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
        box = (left, 40, left + 400, 340)
        draw.rectangle(box, outline="grey")
        draw.text((left, 345), f"epoch {x0} .. {x1}", fill="black")
        draw.text((left - 45, 40), f"{y1:.3g}", fill="black")
        draw.text((left - 45, 330), f"{y0:.3g}", fill="black")
        for row, (name, values) in enumerate(series.items()):
            xy = [
                (box[0] + (x - x0) / max(x1 - x0, 1) * 400, box[3] - (y - y0) / ((y1 - y0) or 1) * 300)
                for x, y in values
            ]
            if len(xy) > 1:
                draw.line(xy, fill=colours[name], width=2)
            for x, y in xy:
                draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colours[name])
            draw.text((left + 300, 45 + 12 * row), name, fill=colours[name])
    atomic_write(out, lambda f: image.save(f, format="PNG"))


if __name__ == "__main__":
    main()
