"""``-demo``: saliency maps (.npy) and heatmap overlays (.png) of an image, a folder of frames or a video, run as the
test runs a video (``engine.evaluate.predict_video``)."""

import os

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from datasets.data import atomic_save_npy, atomic_write
from engine.evaluate import load_trained, predict_video

__all__ = ["read_demo_frames", "colorize", "overlay", "check_demo_outputs", "run_demo"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_demo_frames(path):
    """``(name, RGB PIL image)`` of an image file, of the images in a folder (sorted by name), or of a video file."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise ValueError(f"-demo folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        for name in names:
            with Image.open(os.path.join(path, name)) as image:
                yield os.path.splitext(name)[0], image.convert("RGB")
    elif os.path.isfile(path) and path.lower().endswith(IMAGE_SUFFIXES):
        with Image.open(path) as image:
            yield os.path.splitext(os.path.basename(path))[0], image.convert("RGB")
    elif os.path.isfile(path):
        try:
            import cv2
        except ImportError:
            raise ValueError(
                f"-demo {path} is not an image ({', '.join(IMAGE_SUFFIXES)}); reading it as a video needs OpenCV "
                "(pip install opencv-python-headless), or extract its frames into a folder"
            ) from None
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise ValueError(f"-demo {path}: OpenCV cannot open it as a video")
        try:
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield f"frame_{index:06d}", Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
                index += 1
        finally:
            capture.release()
        if index == 0:
            raise ValueError(f"-demo {path}: the video has no readable frame")
    else:
        raise FileNotFoundError(f"-demo {path}: no such file or folder")


# Colormap anchors (position, RGB): dark blue -> blue -> cyan -> yellow -> red -> dark red, like "jet".
COLORMAP = (
    (0.0, (0, 0, 128)),
    (0.125, (0, 0, 255)),
    (0.375, (0, 255, 255)),
    (0.625, (255, 255, 0)),
    (0.875, (255, 0, 0)),
    (1.0, (128, 0, 0)),
)


def colorize(values):
    """RGB uint8 ``[H, W, 3]`` of ``values`` in [0, 1] through ``COLORMAP`` (piecewise linear)."""
    positions = [p for p, _ in COLORMAP]
    channels = [np.interp(values, positions, [c[k] for _, c in COLORMAP]) for k in range(3)]
    return np.stack(channels, -1).round().astype(np.uint8)


def overlay(image, saliency, strength=0.6):
    """The heatmap of ``saliency`` (``[h, w]`` in [0, 1]) blended over ``image`` at the image's size: each pixel
    takes ``strength * saliency`` of the heatmap colour, so the panorama shows through where nothing is salient."""
    resized = np.asarray(Image.fromarray(saliency.astype(np.float32)).resize(image.size, Image.Resampling.BILINEAR))
    resized = np.clip(resized, 0, 1)
    alpha = strength * resized[..., None]
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colorize(resized)
    return Image.fromarray(blended.round().astype(np.uint8))


def check_demo_outputs(source, out_dir):
    """Refuse an output folder that would mix the outputs with the inputs: the ``-demo`` folder itself, or one where an
    output (``<name>.npy``, ``<name>.png``) would be written over the input file; and a folder of frames where two
    images share a name (``a.jpg``, ``a.png``: one's outputs would replace the other's)."""
    real_out = os.path.realpath(out_dir)
    if os.path.isdir(source):
        if real_out == os.path.realpath(source):
            raise ValueError(
                f"--demo-out {out_dir} is the -demo folder: the overlays (.png) would be mixed with, or written over, "
                "its frames; give another folder"
            )
        stems = {}
        for name in sorted(n for n in os.listdir(source) if n.lower().endswith(IMAGE_SUFFIXES)):
            stem = os.path.splitext(name)[0]
            if stem in stems:
                raise ValueError(
                    f"-demo {source}: {stems[stem]} and {name} would give the same outputs ({stem}.npy, {stem}.png); "
                    "rename one"
                )
            stems[stem] = name
    elif os.path.isfile(source):
        stem = os.path.splitext(os.path.basename(source))[0]
        for suffix in (".npy", ".png"):
            output = os.path.join(real_out, stem + suffix)
            if os.path.realpath(output) == os.path.realpath(source):
                raise ValueError(
                    f"--demo-out {out_dir}: the overlay {output} would be written over the input; give another folder"
                )


def run_demo(opt, device, build_model):
    """Saliency of each frame of ``-demo``: ``<name>.npy`` (``[H, W]`` float32 in [0, 1], the model's size) and
    ``<name>.png`` (overlay at the input's size). The frames are one video, run as the test runs one: the first
    ``prev_offset`` frames get the prior as previous map, each later one the prediction of the frame ``prev_offset``
    before it; the ConvLSTM carries its state."""
    out_dir = opt.demo_out or os.path.join(opt.save_dir, "demo")
    check_demo_outputs(opt.demo, out_dir)
    model, path, _ = load_trained(opt, device, build_model)
    os.makedirs(out_dir, exist_ok=True)
    images = {}

    def steps():
        for index, (name, image) in enumerate(read_demo_frames(opt.demo)):
            images[index] = name, image
            small = image.resize((opt.frame_w, opt.frame_h), Image.Resampling.BILINEAR)
            frame = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1)
            yield index, frame, index - opt.prev_offset if index >= opt.prev_offset else None

    written = []
    for index, prediction, _ in tqdm(
        predict_video(model, steps(), opt, device), desc="demo", unit="frame", disable=None
    ):
        name, image = images.pop(index)
        low, high = prediction.min(), prediction.max()
        array = ((prediction[0] - low) / (high - low).clamp(min=torch.finfo(torch.float32).tiny)).numpy()
        atomic_save_npy(os.path.join(out_dir, name + ".npy"), array)
        picture = overlay(image, array)
        atomic_write(os.path.join(out_dir, name + ".png"), lambda f, p=picture: p.save(f, format="PNG"))
        written.append(name)
    print(f"{len(written)} saliency map(s) from {path} written to {out_dir} (.npy and .png overlays)")
    return out_dir, written
