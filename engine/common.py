"""What the training scripts share besides the loop itself: checkpoints and random states, the datasets, the device
precision. Used by ``train_unet.py`` and ``train_lstm.py``."""

import contextlib
import json
import os
import pickle
import random
import warnings

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

import ref
from datasets.augment import EpochSampler, FixedRotation, RandomlyRotated
from datasets.data import atomic_write_bytes
from datasets.synthetic import ensure_synthetic

__all__ = [
    "LATEST",
    "ARCH_OPTIONS",
    "architecture_of",
    "check_resume_options",
    "write_json",
    "read_log",
    "rng_state",
    "set_rng_state",
    "load_checkpoint",
    "load_model_state",
    "nonfinite_tensors",
    "start_state",
    "tensorboard_writer",
    "load_datasets",
    "test_keys",
    "check_run",
    "check_splits",
    "training_loader",
    "seed_everything",
    "float32_precision",
]

LATEST = "checkpoint_latest.pt"
# Options that define the network and its inputs: -test and -demo take them from the checkpoint.
ARCH_OPTIONS = (
    "frame_h", "frame_w", "target_scale", "prev_offset", "use_sconv", "use_spooling", "use_sconvlstm", "lstm_place",
    "conv_type", "kernel_basis", "upsample",
)  # fmt: skip


def architecture_of(saved_opts):
    """The ``ARCH_OPTIONS`` a checkpoint's options define; checkpoints older than ``--conv-type``, ``--kernel-basis``
    and ``--upsample`` get the values their model had (crown or planar convolutions from ``use_sconv``, free nodes,
    nearest upsampling)."""
    arch = {name: saved_opts[name] for name in ARCH_OPTIONS if name in saved_opts}
    if "use_sconv" in arch:
        arch.setdefault("conv_type", "sconv" if arch["use_sconv"] else "standard")
    arch.setdefault("kernel_basis", None)
    arch.setdefault("upsample", "nearest")
    return arch


def check_resume_options(checkpoint, opt):
    """``-resume`` continues the checkpoint's network: an option of ``ARCH_OPTIONS`` that differs on the command line
    stops with both values (the same command resumes)."""
    differ = [
        f"{name}: checkpoint {value!r}, command line {getattr(opt, name, None)!r}"
        for name, value in architecture_of(checkpoint["opts"]).items()
        if getattr(opt, name, None) != value
    ]
    if differ:
        raise ValueError(
            "-resume continues the checkpoint's network; these options differ (give the run's options): "
            + "; ".join(differ)
        )


def write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def read_log(path):
    """The per-epoch records of a run's ``log.jsonl`` (one JSON object a line, as the training scripts write it)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def rng_state():
    """Every random state a run depends on, as tensors and builtins (``torch.load(weights_only=True)`` reads it)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path, model_name, keys=("model", "epoch", "opts")):
    """A checkpoint written by ``train`` (tensors and builtins: ``weights_only=True``), checked for ``model_name`` and
    for the entries ``keys``. Unreadable files and missing entries raise errors that name the path."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, KeyError, pickle.UnpicklingError) as err:  # empty, truncated or not torch.save's
        raise ValueError(
            f"checkpoint {path} cannot be read ({os.path.getsize(path)} bytes; empty, truncated or not written by "
            f"torch.save): {type(err).__name__}: {err}"
        ) from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} is not a checkpoint of these scripts (a {type(checkpoint).__name__}, not a dict)")
    missing = [key for key in keys if key not in checkpoint]
    if missing:
        raise ValueError(f"{path} is not a checkpoint of these scripts: no {', '.join(missing)} entries")
    if not isinstance(checkpoint["opts"], dict) or checkpoint["opts"].get("model") != model_name:
        model = checkpoint["opts"].get("model") if isinstance(checkpoint["opts"], dict) else None
        raise ValueError(f"{path} holds a {model!r} model, this script trains {model_name!r}")
    return checkpoint


def load_model_state(model, checkpoint, path):
    """``model.load_state_dict(checkpoint["model"])``; a mismatch raises an error that names ``path``."""
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ValueError(f"the weights in {path} do not fit this model: {err}") from err


def make_optimizer(opt, model):
    """``--optimizer``: SGD with ``--momentum`` (the original's) or Adam; ``-lr`` and ``--weight-decay`` for both."""
    if opt.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)


def start_state(opt, model, optimizer, latest, is_main):
    """The epoch a run starts after and its log so far: ``(0, [])`` for a new run (with ``-loadModel``'s weights in
    ``model`` when given); with ``-resume``, ``model``, ``optimizer`` and the random states are restored from
    ``latest`` (the learning rate stays the command line's) and the log is ``log.jsonl`` up to its epoch."""
    if not opt.resume:
        if opt.loadModel:
            load_model_state(model, load_checkpoint(opt.loadModel, opt.model), opt.loadModel)
        return 0, []
    checkpoint = load_checkpoint(latest, opt.model, keys=("model", "optimizer", "epoch", "opts", "rng"))
    check_resume_options(checkpoint, opt)
    saved_optimizer = checkpoint["opts"].get("optimizer", "sgd")  # runs before --optimizer used SGD
    if saved_optimizer != opt.optimizer:
        raise ValueError(
            f"-resume: {latest} was trained with --optimizer {saved_optimizer}, the command line says "
            f"{opt.optimizer} (give the run's --optimizer)"
        )
    if opt.epochs <= checkpoint["epoch"]:
        raise ValueError(
            f"-resume: {latest} is at epoch {checkpoint['epoch']}; -epochs {opt.epochs} leaves nothing to train "
            f"(give -epochs above {checkpoint['epoch']})"
        )
    load_model_state(model, checkpoint, latest)
    optimizer.load_state_dict(checkpoint["optimizer"])
    for group in optimizer.param_groups:
        group["lr"] = opt.lr  # the command line wins (same command: same value)
    set_rng_state(checkpoint["rng"])
    start_epoch, log = checkpoint["epoch"], []
    log_path = os.path.join(opt.save_dir, "log.jsonl")
    if os.path.isfile(log_path):
        log = [record for record in read_log(log_path) if record["epoch"] <= start_epoch]
    if is_main:
        print(f"resuming {latest} after epoch {start_epoch}")
    return start_epoch, log


def tensorboard_writer(opt):
    """A ``SummaryWriter`` into ``<save_dir>/tensorboard`` with ``--use_tensorboard`` (None without it, or with a
    warning when the tensorboard package is missing)."""
    if not opt.use_tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("warning: --use_tensorboard needs the tensorboard package (pip install tensorboard); not used")
        return None
    return SummaryWriter(os.path.join(opt.save_dir, "tensorboard"))


def nonfinite_tensors(model, optimizer):
    """Names of ``model``'s parameters and buffers and of ``optimizer``'s state tensors that hold a NaN or an
    infinity (empty when all are finite): what a checkpoint of them would save."""
    named = list(model.state_dict().items())
    for index, state in enumerate(optimizer.state.values()):
        named += [(f"optimizer state {index} {key}", value) for key, value in state.items()]
    return [
        name
        for name, value in named
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()
    ]


def gt_cache_dir(opt):
    """Where maps built from gaze points and decoded frames are cached: ``--gt-cache`` (``none``: nowhere), by default
    ``<exp-dir>/<expID>/gt_cache``; never inside the dataset."""
    if opt.gt_cache == "none":
        return None
    return opt.gt_cache or os.path.join(opt.save_dir, "gt_cache")


def load_datasets(opt, rank, world_size, dataset_class, train_options=None, **options):
    """The train and test splits of ``dataset_class`` (``VRVideo`` or ``VRVideoLSTM``, ``options`` passed on to both,
    ``train_options`` to the training split only); the
    default synthetic set is generated first when absent (by rank 0). Skipped bad data (``--on-bad-data skip``) is
    reported by rank 0. With ``--use-equirect-rotate`` and a ``--rot-y`` or ``--rot-z``, the test split is seen rotated
    (``datasets.augment.FixedRotation``)."""
    if os.path.abspath(opt.data_dir) == os.path.abspath(ref.data_dir):
        if rank == 0:
            ensure_synthetic(opt.data_dir, **ref.synthetic)
        if world_size > 1:
            dist.barrier()
    # The split: index.json when the folder has one, else the original's seeded sample of --video-train videos.
    index_file = os.path.join(opt.data_dir, "index.json")
    common = dict(
        frame_step=opt.frame_step,
        prev_offset=opt.prev_offset,
        gaussian_sigma=ref.gaussian_sigma,
        gt_source=opt.gt_source,
        cache_dir=gt_cache_dir(opt),
        index_file=index_file if os.path.isfile(index_file) else None,
        on_bad_data=opt.on_bad_data,
        **options,
    )
    splits = []
    for train in (True, False):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "skipped .* with bad data")  # reported below, once, by rank 0
            extra = (train_options or {}) if train else {}
            dataset = dataset_class(
                opt.data_dir, opt.frame_h, opt.frame_w, opt.video_train, train=train, **common, **extra
            )
        if rank == 0 and dataset.skipped:
            file, reason = dataset.skipped[0]
            split = "train" if train else "test"
            print(
                f"warning: skipped {len(dataset.skipped)} bad videos/frames of the {split} split "
                f"(first: {file}: {reason})"
            )
        splits.append(dataset)
    if opt.use_equirect_rotate and (opt.rot_y or opt.rot_z):  # evaluation at the fixed rotation, as the original
        splits[1] = FixedRotation(splits[1], opt.rot_y, opt.rot_z)
    return tuple(splits)


def test_keys(dataset, limit):
    """The ``(video, frame)`` keys evaluated: the first ``limit`` (0: all) in video order; at least 2 (sAUC's
    negatives are the other frames' fixations). Training calls it at startup, so a split that cannot be evaluated
    fails before an epoch is spent."""
    keys = [(vid, fid) for vid in dataset.videos for fid in dataset.frames_of(vid)]
    if limit:
        keys = keys[:limit]
    if len(keys) < 2:
        raise ValueError(
            f"the test split of {dataset.root} has {len(keys)} frame(s) to evaluate (--limit {limit}); sAUC needs at "
            "least 2 (--eval-interval 0 trains without evaluating)"
        )
    return keys


def check_run(opt, world_size, device):
    """What a training run checks before it loads the data: the batch splits over the processes, ``--cuda-graph``
    has one process on a GPU."""
    if opt.batch_size % world_size:
        raise ValueError(f"--batch-size {opt.batch_size} must be divisible by the number of processes ({world_size})")
    if opt.cuda_graph and (device.type != "cuda" or world_size > 1):
        raise ValueError(f"--cuda-graph needs one process on a CUDA device; this run has {world_size} on {device}")


def check_splits(opt, train_set, test_set):
    """The training split has items; with ``--eval-interval`` the test split can be evaluated: a split that cannot
    fails now, not after an epoch."""
    if len(train_set) == 0:
        raise ValueError(f"the training split of {opt.data_dir} has no items")
    if opt.eval_interval:
        test_keys(test_set, opt.limit)


def training_loader(opt, train_set, rank, world_size, device):
    """``(loader, sampler)`` of this process's share of ``train_set`` (``sampler.set_epoch`` reshuffles); with
    ``--use-equirect-rotate`` each item (each sequence) is rotated by one draw from (seed, epoch, item): see
    ``datasets/augment.py``."""
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=opt.seed)
    if opt.use_equirect_rotate:
        train_set, sampler = RandomlyRotated(train_set, opt.seed), EpochSampler(sampler)
    loader = DataLoader(
        train_set,
        batch_size=opt.batch_size // world_size,
        sampler=sampler,
        num_workers=opt.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=opt.num_workers > 0,  # started once, not at every epoch
    )
    return loader, sampler


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def float32_precision(device, tf32):
    """On CUDA, float32 matrix products, convolutions and the crown kernels on TF32 tensor cores (``tf32``) or in full
    float32; the previous settings are put back on exit (``main`` may be called from other code)."""
    if device.type != "cuda":
        yield
        return
    previous = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous[0])
        torch.backends.cudnn.allow_tf32 = previous[1]
