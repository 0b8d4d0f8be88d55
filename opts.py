"""Command-line options of ``train_unet.py`` and ``train_lstm.py`` (the original's flags, defaults from ``ref.py``).

Nothing happens on import: the scripts call ``parse(argv)`` in their ``main``.
"""

import argparse
import os

import ref

__all__ = ["parse", "str2bool", "MODELS"]

MODELS = tuple(ref.hyper)


def str2bool(value):
    """``'1'/'true'/'yes'/'on'`` -> True, ``'0'/'false'/'no'/'off'`` -> False (any case), for ``--use-sconv 0``."""
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (1/0, true/false, yes/no, on/off), got {value!r}")


def _checked(convert, accepted, valid):
    """An argparse ``type``: ``convert(text)`` when ``valid`` of it, else an error that says what is ``accepted``."""

    def parse(value):
        try:
            number = convert(value)
        except ValueError:
            number = None
        if number is None or not valid(number):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {value!r}")
        return number

    return parse


_positive_int = _checked(int, "a positive integer", lambda x: x >= 1)
_non_negative_int = _checked(int, "an integer >= 0", lambda x: x >= 0)
_positive_float = _checked(float, "a positive finite number", lambda x: 0 < x < float("inf"))
_non_negative_float = _checked(float, "a finite number >= 0", lambda x: 0 <= x < float("inf"))

# Flags whose values break the run later (an infinite float32 update, a seed torch cannot take, a diverging momentum,
# an evaluation of one frame: sAUC needs two) are refused here, with the accepted range.
FLOAT32_MAX = 3.4028234663852886e38
_learning_rate = _checked(
    float, f"a positive number <= {FLOAT32_MAX:.4g} (float32's largest)", lambda x: 0 < x <= FLOAT32_MAX
)
_momentum = _checked(float, "a number in [0, 1)", lambda x: 0 <= x < 1)
_seed = _checked(int, "an integer in [0, 2**32 - 1]", lambda x: 0 <= x < 2**32)
_test_limit = _checked(int, "0 (all) or an integer >= 2 (sAUC needs 2 frames)", lambda x: x == 0 or x >= 2)


class _Rejected(argparse.Action):
    """A flag of the original (or of earlier versions) with no equivalent here: it stops with what to use instead."""

    def __init__(self, option_strings, dest, message, **kwargs):
        super().__init__(
            option_strings, argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        self.message = message

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is not supported here: {self.message}")


# The original's flags (its opts.py) and earlier ones of these scripts that mean nothing here, and what to use.
REJECTED = {
    "--frame-interval": "earlier versions sampled every N-th frame with it; it is now two options: --frame-step N "
    "(use every N-th frame; default 1, as the original) and --prev-offset N (the previous map is that of the frame N "
    "earlier; default 5, the original's frame_interval)",
    "--snapshot-fname-prefix": "checkpoints go to <--exp-dir>/<-expID>/ (use -expID NAME)",
    "--snapshot-fname-dir": "checkpoints go to <--exp-dir>/<-expID>/ (use -expID NAME)",
    "--start-epoch": "-resume continues a run after its last checkpointed epoch",
    "--clear-cache": "ground-truth caches are keyed by everything they depend on and are never stale; to rebuild them, "
    "delete the --gt-cache folder (default <--exp-dir>/<-expID>/gt_cache)",
    "-trainBatch": "use --batch-size (the global batch)",
    "--plot-server": "visdom is not supported; use --use_tensorboard",
    "--plot-port": "visdom is not supported; use --use_tensorboard",
    "--use_visdom": "visdom is not supported; use --use_tensorboard",
    "--input-size": "use --frame-h and --frame-w",
    "-DEBUG": "there are no debug levels",
}


def build_parser(model):
    """The argument parser of ``model`` (``'unet'`` or ``'convlstm'``): the original's hyper-parameters as defaults."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    hyper = ref.hyper[model]
    p = argparse.ArgumentParser(
        description=f"Train, evaluate or run the spherical {'U-Net' if model == 'unet' else 'ConvLSTM'} model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "-expID", "--exp-name", dest="expID", default="default", help="experiment name: outputs go to <exp-dir>/<expID>"
    )
    p.add_argument("-test", action="store_true", help="evaluate a checkpoint on the test split and exit")
    p.add_argument("-demo", default="", metavar="PATH", help="saliency of an image, a folder of frames or a video")
    p.add_argument(
        "-resume",
        nargs="?",
        const=True,
        default=False,
        type=str2bool,
        metavar="BOOL",
        help="continue <exp-dir>/<expID> from its latest checkpoint ('-resume' or '-resume True'; '-resume False' "
        "does not resume)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="train into <exp-dir>/<expID> although it holds a run: that run's checkpoints, log, options and test "
        "metrics are deleted first (without it, such a folder is refused; -resume continues it)",
    )
    p.add_argument(
        "--oracle",
        action="store_true",
        help="-test also reports the teacher-forced score (ground-truth previous maps), labelled as an oracle",
    )
    p.add_argument("-loadModel", default=None, metavar="PATH", help="checkpoint to start from or evaluate")

    p.add_argument("-lr", type=_learning_rate, default=hyper["lr"], help="learning rate")
    p.add_argument("-epochs", type=_positive_int, default=hyper["epochs"], help="number of training epochs")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=hyper["batch_size"],
        help="global batch size (split evenly over the processes under torchrun)",
    )
    p.add_argument(
        "--sequence-len",
        type=_positive_int,
        default=hyper["sequence_len"],
        help="frames per training sequence (ConvLSTM)",
    )
    p.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default="sgd",
        help="sgd (the original's, with --momentum) or adam (betas 0.9, 0.999): networks whose convolutions sum their "
        "taps (--conv-type sphereconv, standard) diverge under SGD at the crown network's rates (docs/training.md)",
    )
    p.add_argument("--momentum", type=_momentum, default=ref.momentum, help="SGD momentum")
    p.add_argument("--weight-decay", type=_non_negative_float, default=ref.weight_decay, help="weight decay")
    p.add_argument(
        "--target-scale",
        type=_positive_float,
        default=ref.target_scale,
        help="previous and target maps (on the original's scale, docs/data.md) are multiplied by this, as the original",
    )
    p.add_argument(
        "--max-steps",
        type=_non_negative_int,
        default=0,
        help="at most this many optimiser steps per epoch (0: the whole epoch)",
    )
    p.add_argument(
        "--limit", type=_test_limit, default=0, help="evaluate on at most this many test items (0: all; else >= 2)"
    )
    p.add_argument(
        "--save-interval",
        type=_positive_int,
        default=ref.save_interval,
        help="keep a checkpoint every this many epochs (the latest one is always kept)",
    )
    p.add_argument(
        "--eval-interval",
        type=_non_negative_int,
        default=ref.eval_interval,
        help="evaluate on the test split every this many epochs and after the last one (0: never)",
    )

    p.add_argument(
        "--data-dir", default=ref.data_dir, help="dataset root (the default synthetic set is made when absent)"
    )
    p.add_argument("--exp-dir", default=ref.exp_dir, help="where experiments are written")
    p.add_argument("--frame-h", type=_positive_int, default=ref.frame_h, help="frame height (divisible by 8)")
    p.add_argument("--frame-w", type=_positive_int, default=ref.frame_w, help="frame width (divisible by 8)")
    p.add_argument(
        "--video-train",
        type=_non_negative_int,
        default=ref.video_train,
        help="training videos of the original's seeded split, used when the data folder has no index.json",
    )
    p.add_argument("--frame-step", type=_positive_int, default=ref.frame_step, help="use every n-th frame")
    p.add_argument(
        "--prev-offset",
        type=_positive_int,
        default=ref.prev_offset,
        help="the previous map of frame n is that of frame n - this (a multiple of --frame-step)",
    )
    p.add_argument(
        "--gt-source",
        choices=("auto", "gaze"),
        default="auto",
        help="auto: a frame's published <frame>_gt.npy when present, else built from gaze points; gaze: always built",
    )
    p.add_argument(
        "--gt-cache",
        default="",
        metavar="DIR",
        help="cache of the maps built from gaze points and of the frames decoded at the training size (default "
        "<exp-dir>/<expID>/gt_cache; 'none': no cache); never inside the dataset, which may be read-only",
    )
    p.add_argument(
        "--on-bad-data",
        choices=("raise", "skip"),
        default="raise",
        help="bad videos/frames in the dataset: stop with the list, or skip them (counted and reported)",
    )
    p.add_argument("--num-workers", type=_non_negative_int, default=ref.num_workers, help="data loading processes")
    p.add_argument("--seed", type=_seed, default=ref.seed, help="seed of the initial weights and the data order")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    p.add_argument(
        "--tf32",
        type=str2bool,
        default=True,
        metavar="BOOL",
        help="TF32 tensor cores for float32 matrix products and convolutions on CUDA (0: full float32, slower)",
    )
    p.add_argument(
        "--cuda-graph",
        action="store_true",
        help="training replays the model's forward and backward from CUDA graphs (one process on a GPU): no "
        "per-kernel host time, for small frames (docs/training.md)",
    )
    p.add_argument("--use_tensorboard", action="store_true", help="also log to TensorBoard (needs tensorboard)")
    p.add_argument("--demo-out", default=None, metavar="DIR", help="where -demo writes (default <exp>/<expID>/demo)")

    # Ablations: each spherical part or its planar twin.
    p.add_argument(
        "--use-sconv",
        type=str2bool,
        default=None,
        metavar="BOOL",
        help="crown convs (0: planar twins); the original's spelling of --conv-type sconv / standard (default: 1)",
    )
    p.add_argument(
        "--use-spooling", type=str2bool, default=True, metavar="BOOL", help="spherical pooling (0: nn.MaxPool2d(2))"
    )
    p.add_argument("--use-smse", type=str2bool, default=True, metavar="BOOL", help="SphereMSE loss (0: nn.MSELoss)")
    p.add_argument(
        "--use-sconvlstm",
        type=str2bool,
        default=None,
        metavar="BOOL",
        help="crown convs in the ConvLSTM's gates (0: planar twins; default 1; SphereConv with --conv-type sphereconv)",
    )
    if model == "convlstm":
        p.add_argument(
            "--lstm-place",
            choices=("decoder", "bottleneck"),
            default="decoder",
            help="decoder: the original's SconvLSTM (LSTM on the decoder's H/2 features); bottleneck: on the H/8 ones",
        )
    _add_model_and_rotation_options(p)
    for flag, message in REJECTED.items():
        p.add_argument(flag, action=_Rejected, message=message)
    return p


# --- convolution type, crown kernel basis, upsampling (issues 22, 23) and rotation augmentation (issue 23) ---------

CONV_TYPES = ("sconv", "sphereconv", "standard")
KERNEL_BASES = ("none", "resolved", "smooth")
UPSAMPLINGS = ("nearest", "spherical")


def _add_model_and_rotation_options(p):
    p.add_argument(
        "--conv-type",
        choices=CONV_TYPES,
        default=None,
        help="the network's convolutions: sconv (the paper's crown convolutions), sphereconv (3 x 3 SphereNet-style, "
        "also the ConvLSTM's gates), standard (planar twins); the original's flag (default: sconv, or as --use-sconv)",
    )
    p.add_argument(
        "--kernel-basis",
        choices=KERNEL_BASES,
        default="none",
        help="crown kernels' parametrisation: none (one weight per node, the paper's), resolved (what the grid "
        "resolves at the equator), smooth (low-degree smooth kernels); docs/latitude.md",
    )
    p.add_argument(
        "--upsample",
        choices=UPSAMPLINGS,
        default="nearest",
        help="the decoder's x2 upsampling: nearest (the paper's) or spherical (bilinear on the sphere)",
    )
    p.add_argument(
        "--frame-jitter", type=float, default=0.0, metavar="DEG",
        help="U-Net with --conv-type sphereconv: while training, turn each layer's 3 x 3 taps per sample by an angle "
        "within +-DEG degrees (SphereConv's frame_jitter; docs/latitude.md); not in the original (default: 0, off)",
    )  # fmt: skip
    p.add_argument(
        "--own-previous", type=float, default=0.0, metavar="P",
        help="U-Net training: each item's previous map is, with probability P, the model's own map of the earlier "
        "frame (eval mode, no gradient; made as deployed) instead of its ground truth; not in the original "
        "(default: 0, always the ground truth); docs/latitude.md",
    )  # fmt: skip
    p.add_argument(
        "--own-previous-steps", type=int, default=1, metavar="K",
        help="with --own-previous: the model's own map is made as deployed over up to K earlier frames (each from "
        "its own map of the one before; the oldest from its ground-truth previous map) instead of one (default: 1)",
    )  # fmt: skip
    p.add_argument(
        "--use-equirect-rotate",
        "--use_equirect_rotate",
        dest="use_equirect_rotate",
        action="store_true",
        help="training: each sample (each sequence) rotated by (rot_y, rot_z) drawn from (0, 60), (60, 0), (60, 60) "
        "degrees, as the original; evaluation: the test videos rotated by (--rot-y, --rot-z)",
    )
    p.add_argument(
        "--rot-y", "--rot_y", dest="rot_y", type=float, default=0.0, metavar="DEG",
        help="evaluation with --use-equirect-rotate: turn about the horizontal axis (the centre moves down), degrees",
    )  # fmt: skip
    p.add_argument(
        "--rot-z", "--rot_z", dest="rot_z", type=float, default=0.0, metavar="DEG",
        help="evaluation with --use-equirect-rotate: turn about the polar axis (the content moves right), degrees",
    )  # fmt: skip


def _resolve_model_and_rotation_options(parser, opt, model):
    """``--conv-type`` and its older spelling ``--use-sconv`` made one choice (contradictions stop with a message);
    ``kernel_basis`` None for ``'none'``; the rotation flags checked."""
    implied = None if opt.use_sconv is None else ("sconv" if opt.use_sconv else "standard")
    if opt.conv_type is not None and implied is not None and implied != opt.conv_type:
        parser.error(
            f"--use-sconv {int(opt.use_sconv)} means --conv-type {implied}, which contradicts --conv-type "
            f"{opt.conv_type}; give one of them"
        )
    opt.conv_type = opt.conv_type or implied or "sconv"
    opt.use_sconv = opt.conv_type == "sconv"
    if opt.kernel_basis != "none" and opt.conv_type != "sconv":
        parser.error(
            f"--kernel-basis {opt.kernel_basis} is for crown convolutions (--conv-type sconv), not {opt.conv_type}"
        )
    opt.kernel_basis = None if opt.kernel_basis == "none" else opt.kernel_basis
    if model == "convlstm" and opt.conv_type == "sphereconv" and opt.use_sconvlstm is not None:
        parser.error("--use-sconvlstm does not apply with --conv-type sphereconv: the ConvLSTM's gates are SphereConv")
    opt.use_sconvlstm = True if opt.use_sconvlstm is None else opt.use_sconvlstm
    if opt.frame_jitter:
        if model != "unet" or opt.conv_type != "sphereconv":
            parser.error("--frame-jitter applies to the U-Net with --conv-type sphereconv only")
        if not 0 < opt.frame_jitter <= 90:
            parser.error(f"--frame-jitter must be an angle in degrees in [0, 90], got {opt.frame_jitter}")
        if opt.cuda_graph:
            parser.error("--frame-jitter draws new turns every step, which a CUDA graph would replay frozen: drop one")
    if opt.own_previous:
        if model != "unet":
            parser.error("--own-previous applies to the U-Net (train_unet.py) only")
        if not 0 <= opt.own_previous <= 1:
            parser.error(f"--own-previous must be a probability in [0, 1], got {opt.own_previous}")
    if opt.own_previous_steps < 1:
        parser.error(f"--own-previous-steps must be >= 1, got {opt.own_previous_steps}")
    if opt.own_previous_steps > 1 and not opt.own_previous:
        parser.error("--own-previous-steps needs --own-previous P > 0")
    for name in ("rot_y", "rot_z"):
        value = getattr(opt, name)
        if not -360 <= value <= 360:
            parser.error(f"--{name.replace('_', '-')} must be an angle in degrees in [-360, 360], got {value}")
        if value and not opt.use_equirect_rotate:
            parser.error(f"--{name.replace('_', '-')} rotates the test videos only with --use-equirect-rotate")


def parse(argv=None, model="unet"):
    """Parse ``argv`` (``sys.argv[1:]`` when None) for ``model``; returns an ``argparse.Namespace``.

    Adds ``model`` and ``save_dir`` (``<exp_dir>/<expID>``). Exits with a usage message naming the option on
    bad values (argparse's convention for command lines).
    """
    parser = build_parser(model)
    opt = parser.parse_args(argv)
    for name in ("frame_h", "frame_w"):
        value = getattr(opt, name)
        if value % 8 or value < 16:
            parser.error(f"--{name.replace('_', '-')} must be a multiple of 8 and >= 16 (three poolings), got {value}")
    if model == "unet" and opt.sequence_len != 1:
        parser.error("--sequence-len is for the ConvLSTM (train_lstm.py); the U-Net sees single frames")
    if opt.test and opt.demo:
        parser.error("give -test or -demo, not both")
    if opt.prev_offset % opt.frame_step:
        parser.error(f"--prev-offset {opt.prev_offset} must be a multiple of --frame-step {opt.frame_step}")
    if opt.resume and opt.overwrite:
        parser.error("give -resume (continue this experiment) or --overwrite (replace it), not both")
    if opt.resume and opt.loadModel:
        parser.error("give -resume (continue this experiment) or -loadModel (start from weights), not both")
    if os.sep in opt.expID or opt.expID in ("", ".", ".."):
        parser.error(f"-expID must be a plain name (no path separator), got {opt.expID!r}")
    _resolve_model_and_rotation_options(parser, opt, model)
    opt.model = model
    opt.lstm_place = getattr(opt, "lstm_place", None)
    opt.save_dir = os.path.join(opt.exp_dir, opt.expID)
    return opt
