"""The training scripts' model and augmentation flags: --conv-type (and --use-sconv), --kernel-basis, --upsample,
--use-equirect-rotate with --rot-y / --rot-z; on a tiny synthetic set (3 videos x 6 frames of 16 x 32), CPU."""

import math
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

import opts
import train_lstm
import train_unet
from datasets.augment import EpochSampler, FixedRotation, RandomlyRotated, rotation_of
from datasets.data import VRVideo, VRVideoLSTM, normalise_previous, reference_mass, saliency_map
from engine.common import LATEST, architecture_of, load_datasets
from engine.evaluate import evaluate, load_trained, own_previous_maps, predict_video, previous_map_tools
from engine.evaluate import test_keys as evaluated_keys  # not named test_*: pytest would collect it
from models import SphericalUNet
from sconv.functional.rotate import rotate_equirect, rotate_points
from sconv.module.sconv import SphericalConv
from sconv.module.sphereconv import SphereConv
from tests.conftest import H, W, common_args


def test_conv_type_and_its_older_spelling(capsys):
    default = opts.parse([])
    assert (default.conv_type, default.use_sconv, default.kernel_basis) == ("sconv", True, None)
    assert default.upsample == "nearest"
    assert default.use_sconvlstm and not default.use_equirect_rotate and (default.rot_y, default.rot_z) == (0, 0)
    for argv, conv_type in (
        (["--use-sconv", "0"], "standard"),
        (["--use-sconv", "False"], "standard"),
        (["--conv-type", "standard", "--use-sconv", "0"], "standard"),
        (["--conv-type", "sconv", "--use-sconv", "1"], "sconv"),
        (["--conv-type", "sphereconv"], "sphereconv"),
    ):
        opt = opts.parse(argv)
        assert (opt.conv_type, opt.use_sconv) == (conv_type, conv_type == "sconv"), argv
    smooth = opts.parse(["--kernel-basis", "smooth", "--upsample", "spherical"])
    assert (smooth.kernel_basis, smooth.upsample) == ("smooth", "spherical")
    original = opts.parse(["--use_equirect_rotate", "--rot_y", "60", "--rot_z", "-30"])
    assert original.use_equirect_rotate and (original.rot_y, original.rot_z) == (60, -30)
    for argv, model, message in (
        (["--conv-type", "sphereconv", "--use-sconv", "1"], "unet", "--use-sconv 1 means --conv-type sconv"),
        (["--conv-type", "standard", "--use-sconv", "true"], "unet", "contradicts --conv-type standard"),
        (["--conv-type", "sconv", "--use-sconv", "0"], "unet", "contradicts --conv-type sconv"),
        (["--conv-type", "gafilters"], "unet", "invalid choice"),
        (["--kernel-basis", "smooth", "--use-sconv", "0"], "unet", "is for crown convolutions"),
        (["--kernel-basis", "resolved", "--conv-type", "sphereconv"], "unet", "is for crown convolutions"),
        (["--upsample", "bilinear"], "unet", "invalid choice"),
        (["--conv-type", "sphereconv", "--use-sconvlstm", "1"], "convlstm", "gates are SphereConv"),
        (["--rot-y", "60"], "unet", "--rot-y rotates the test videos only with --use-equirect-rotate"),
        (["--use-equirect-rotate", "--rot-z", "400"], "unet", "--rot-z must be an angle in degrees"),
        (["--use-equirect-rotate", "--rot-z", "nan"], "unet", "--rot-z must be an angle in degrees"),
        (["--frame-jitter", "40"], "unet", "--frame-jitter applies to the U-Net with --conv-type sphereconv only"),
        (["--frame-jitter", "40", "--conv-type", "sphereconv"], "convlstm", "--frame-jitter applies to the U-Net"),
        (["--frame-jitter", "-5", "--conv-type", "sphereconv"], "unet", "--frame-jitter must be an angle"),
        (["--frame-jitter", "nan", "--conv-type", "sphereconv"], "unet", "--frame-jitter must be an angle"),
        (["--frame-jitter", "9", "--conv-type", "sphereconv", "--cuda-graph"], "unet", "CUDA graph would replay"),
        (["--own-previous", "1.5"], "unet", "--own-previous must be a probability in [0, 1]"),
        (["--own-previous", "nan"], "unet", "--own-previous must be a probability in [0, 1]"),
        (["--own-previous", "0.5"], "convlstm", "--own-previous applies to the U-Net"),
        (["--own-previous", "0.5", "--own-previous-steps", "0"], "unet", "--own-previous-steps must be >= 1"),
        (["--own-previous-steps", "3"], "unet", "--own-previous-steps needs --own-previous"),
    ):
        with pytest.raises(SystemExit):
            opts.parse(argv + ["-expID", "x"], model=model)
        assert message in capsys.readouterr().err, argv


def conv_kinds(model, names):
    return [type(getattr(model, name)) for name in names]


def test_options_build_the_models_they_name():
    size = ["--frame-h", str(H), "--frame-w", str(W)]
    layers = ("conv1", "conv4", "conv7")
    unet = train_unet.build_model(opts.parse(size))
    assert conv_kinds(unet, layers) == [SphericalConv] * 3 and all(unet.conv1.kernel_basis is None for _ in layers)
    assert unet.upsample.mode == "nearest"
    assert conv_kinds(train_unet.build_model(opts.parse(size + ["--use-sconv", "0"])), layers) == [nn.Conv2d] * 3
    sphere = train_unet.build_model(opts.parse(size + ["--conv-type", "sphereconv", "--upsample", "spherical"]))
    assert conv_kinds(sphere, layers) == [SphereConv] * 3 and sphere.upsample.mode == "bilinear"
    assert all(getattr(sphere, name).frame_jitter == 0 for name in layers)
    jitter = train_unet.build_model(opts.parse(size + ["--conv-type", "sphereconv", "--frame-jitter", "40"]))
    assert all(getattr(jitter, name).frame_jitter == pytest.approx(math.radians(40)) for name in layers)
    smooth = train_unet.build_model(opts.parse(size + ["--kernel-basis", "smooth"]))
    assert all(getattr(smooth, name).kernel_basis == "smooth" for name in layers)

    def lstm(argv):
        model = train_lstm.build_model(opts.parse(size + argv, model="convlstm"))
        return model, [type(cell.conv) for cell in model.lstm.cells]

    model, gates = lstm([])
    assert conv_kinds(model, layers) == [SphericalConv] * 3 and gates == [SphericalConv] * 2
    model, gates = lstm(["--use-sconv", "0"])  # the original's ablation: planar U-Net, crown ConvLSTM
    assert conv_kinds(model, layers) == [nn.Conv2d] * 3 and gates == [SphericalConv] * 2
    model, gates = lstm(["--use-sconvlstm", "0"])
    assert conv_kinds(model, layers) == [SphericalConv] * 3 and gates == [nn.Conv2d] * 2
    model, gates = lstm(["--conv-type", "sphereconv"])  # the original's convlstm.py: SphereConv gates too
    assert conv_kinds(model, layers) == [SphereConv] * 3 and gates == [SphereConv] * 2
    frames, previous = torch.rand(1, 2, 3, H, W), torch.rand(1, 2, 1, H, W)
    out, _ = model(frames, previous)
    assert out.shape == (1, 2, 1, H, W) and torch.isfinite(out).all()
    model, gates = lstm(["--kernel-basis", "resolved", "--upsample", "spherical"])
    assert [cell.conv.kernel_basis for cell in model.lstm.cells] == ["resolved"] * 2
    assert model.conv1.kernel_basis == "resolved" and model.upsample.mode == "bilinear"


def test_checkpoint_records_the_network_and_test_rebuilds_it(dirs):
    args = common_args(dirs) + ["-expID", "smooth"]
    train_unet.main(args + ["-epochs", "1", "--max-steps", "1", "--kernel-basis", "smooth", "--upsample", "spherical"])
    saved = torch.load(os.path.join(dirs[1], "smooth", LATEST), weights_only=True)
    assert (saved["opts"]["conv_type"], saved["opts"]["kernel_basis"], saved["opts"]["upsample"]) == (
        "sconv",
        "smooth",
        "spherical",
    )
    # -test with none of the flags rebuilds the checkpoint's network.
    model, _, epoch = load_trained(opts.parse(args + ["-test"]), torch.device("cpu"), train_unet.build_model)
    assert epoch == 1 and model.upsample.mode == "bilinear" and model.conv1.kernel_basis == "smooth"
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, saved["model"][name], rtol=0, atol=0)
    report = train_unet.main(args + ["-test", "--limit", "2"])
    assert all(math.isfinite(v) for v in report["model"].values())
    # -resume continues the same network: a different one on the command line is refused, naming the option.
    with pytest.raises(ValueError, match="upsample: checkpoint 'spherical', command line 'nearest'"):
        train_unet.main(args + ["-epochs", "2", "--max-steps", "1", "-resume", "--kernel-basis", "smooth"])


def test_optimizer_flag_trains_with_adam_and_resume_keeps_it(dirs):
    """--optimizer adam: the checkpoint holds Adam's state (step count and moments for every parameter), -resume
    continues it, and -resume with another --optimizer is refused, naming both."""
    assert opts.parse([]).optimizer == "sgd"
    sgd = common_args(dirs) + ["-expID", "adam", "-lr", "1e-3", "--max-steps", "1"]
    args = sgd + ["--optimizer", "adam"]
    train_unet.main(args + ["-epochs", "1"])
    saved = torch.load(os.path.join(dirs[1], "adam", LATEST), weights_only=True)
    assert saved["opts"]["optimizer"] == "adam"
    state = saved["optimizer"]["state"]
    assert len(state) == len(saved["optimizer"]["param_groups"][0]["params"])
    assert all({"step", "exp_avg", "exp_avg_sq"} <= s.keys() and float(s["step"]) == 1 for s in state.values())
    train_unet.main(args + ["-epochs", "2", "-resume"])
    resumed = torch.load(os.path.join(dirs[1], "adam", LATEST), weights_only=True)
    assert resumed["epoch"] == 2 and all(float(s["step"]) == 2 for s in resumed["optimizer"]["state"].values())
    with pytest.raises(ValueError, match="--optimizer adam, the command line says sgd"):
        train_unet.main(sgd + ["-epochs", "3", "-resume"])
    with pytest.raises(SystemExit):
        opts.parse(["--optimizer", "rmsprop", "-expID", "x"])


def test_checkpoints_from_before_the_flags_rebuild_their_network():
    assert architecture_of({"use_sconv": False, "frame_h": 16}) == {
        "use_sconv": False,
        "frame_h": 16,
        "conv_type": "standard",
        "kernel_basis": None,
        "upsample": "nearest",
    }
    assert architecture_of({"use_sconv": True})["conv_type"] == "sconv"
    newer = architecture_of({"use_sconv": False, "conv_type": "sphereconv", "upsample": "spherical"})
    assert (newer["conv_type"], newer["upsample"]) == ("sphereconv", "spherical")


def rotated_gaze(points, rot_y, rot_z):
    """Direct float64 evaluation of the documented convention on (x, y) = (longitude / 2 pi, colatitude / pi): a turn
    by rot_z about the polar axis (content moves right), then by rot_y about the horizontal axis a quarter turn right
    of the panorama's centre (the centre moves down); here with the usual axes (x at longitude 0)."""
    phi, theta = 2 * math.pi * points[:, 0], math.pi * points[:, 1]
    v = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)
    a, b = math.radians(rot_z), math.radians(rot_y)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    ry = np.array([[math.cos(b), 0, -math.sin(b)], [0, 1, 0], [math.sin(b), 0, math.cos(b)]])
    v = v @ (ry @ rz).T
    x = np.mod(np.arctan2(v[:, 1], v[:, 0]) / (2 * math.pi), 1.0)
    return np.stack([x, np.arccos(np.clip(v[:, 2], -1, 1)) / math.pi], axis=1)


def test_centre_moves_down_by_rot_y():
    torch.testing.assert_close(rotated_gaze(np.array([[0.5, 0.5]]), 60, 0), np.array([[0.5, 0.5 + 60 / 180]]))
    torch.testing.assert_close(rotated_gaze(np.array([[0.5, 0.5]]), 0, 90), np.array([[0.75, 0.5]]))


@pytest.fixture(scope="module")
def train_set(dirs):
    return VRVideo(dirs[0], H, W, 2, prev_offset=2, gt_source="gaze")


@pytest.mark.parametrize("angles", [(0, 90), (60, 0), (60, 60)])
def test_rotated_item_is_the_rotated_panorama(train_set, angles):
    rot_y, rot_z = angles
    rotated = RandomlyRotated(train_set, seed=0, choices=[angles])
    index = next(i for i, (vid, fid) in enumerate(train_set.items) if train_set.previous_key(vid, fid) is not None)
    vid, fid = train_set.items[index]
    frame, previous, target = rotated[3, index]
    plain_frame, _, plain_target = train_set[index]
    # Targets are rebuilt from the rotated gaze points, whatever the rotation.
    expected = saliency_map(rotated_gaze(train_set._gaze[vid, fid], rot_y, rot_z), H, W, train_set.gaussian_sigma)
    torch.testing.assert_close(target[0], torch.from_numpy(expected), rtol=1e-5, atol=1e-7)
    prev = train_set.previous_key(vid, fid)
    expected = saliency_map(rotated_gaze(train_set._gaze[vid, prev], rot_y, rot_z), H, W, train_set.gaussian_sigma)
    mass = reference_mass(H, W, train_set.gaussian_sigma)
    torch.testing.assert_close(previous[0], normalise_previous(torch.from_numpy(expected), mass), rtol=1e-5, atol=1e-7)
    if rot_y == 0:  # a turn about the polar axis by a whole number of columns is a roll of the panorama
        shift = round(W * rot_z / 360)
        torch.testing.assert_close(frame, plain_frame.roll(shift, -1), rtol=0, atol=1e-6)
        torch.testing.assert_close(target, plain_target.roll(shift, -1), rtol=1e-5, atol=1e-7)
    # Frame and maps turn alike: the frame is rotated by the operator that, applied to the plain target, gives the
    # target rebuilt from rotated gaze up to the interpolation error of a coarse grid.
    rotation = rotation_of(rot_y, rot_z)
    torch.testing.assert_close(frame, rotate_equirect(plain_frame[None], rotation.float())[0], rtol=0, atol=1e-6)
    resampled = rotate_equirect(plain_target[None], rotation.float())[0]
    assert float((resampled - target).norm() / target.norm()) < 0.25


def test_first_frames_keep_the_unrotated_prior(train_set):
    rotated = RandomlyRotated(train_set, seed=0, choices=[(60, 60)])
    index = next(i for i, (vid, fid) in enumerate(train_set.items) if train_set.previous_key(vid, fid) is None)
    torch.testing.assert_close(rotated[0, index][1], train_set.prior, rtol=0, atol=0)


def test_sequence_items_are_rotated_as_one(dirs):
    sequences = VRVideoLSTM(dirs[0], H, W, 2, sequence_len=2, prev_offset=2, gt_source="gaze")
    rotated = RandomlyRotated(sequences, seed=0, choices=[(0, 90)])
    frames, _, targets = rotated[0, 0]
    plain_frames, _, plain_targets = sequences[0]
    torch.testing.assert_close(frames, plain_frames.roll(8, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(targets, plain_targets.roll(8, -1), rtol=1e-5, atol=1e-7)


class AnglesOnly(Dataset):
    """Stands for a dataset: an item is its index and the rotation it was given."""

    def __len__(self):
        return 12

    def sample(self, index, rotation):
        return torch.tensor(index), rotation


def draws(seed, workers, epochs=2):
    dataset = RandomlyRotated(AnglesOnly(), seed)
    sampler = EpochSampler(RandomSampler(range(12), generator=torch.Generator().manual_seed(5)))
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=workers)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append([(int(i), r) for indices, rotations in loader for i, r in zip(indices, rotations)])
    return out


def test_draws_are_seeded_per_epoch_and_item_and_the_same_with_workers():
    dataset = RandomlyRotated(AnglesOnly(), seed=3)
    counts = {}
    for index in range(600):
        angles = dataset.angles(0, index)
        counts[angles] = counts.get(angles, 0) + 1
    assert set(counts) == {(0.0, 60.0), (60.0, 0.0), (60.0, 60.0)} and min(counts.values()) > 150
    assert [dataset.angles(1, i) for i in range(50)] != [dataset.angles(0, i) for i in range(50)]
    other_seed = RandomlyRotated(AnglesOnly(), seed=4)
    assert [other_seed.angles(0, i) for i in range(50)] != [dataset.angles(0, i) for i in range(50)]
    in_process, with_workers = draws(7, 0), draws(7, 2)
    for epoch_a, epoch_b in zip(in_process, with_workers):
        assert [i for i, _ in epoch_a] == [i for i, _ in epoch_b]
        for (index, rotation), (_, other) in zip(epoch_a, epoch_b):
            torch.testing.assert_close(rotation, other, rtol=0, atol=0)
            rot_y, rot_z = RandomlyRotated(AnglesOnly(), 7).angles(in_process.index(epoch_a), index)
            points = np.array([[0.1, 0.3], [0.5, 0.5], [0.8, 0.7]])
            expected = torch.from_numpy(rotated_gaze(points, rot_y, rot_z))
            torch.testing.assert_close(rotate_points(points, rotation), expected, rtol=0, atol=1e-9)
    with pytest.raises(TypeError, match=r"indexed by \(epoch, index\)"):
        dataset[0]


def test_evaluation_at_a_fixed_rotation(dirs):
    """The spherical U-Net commutes with turns about the polar axis by whole columns, so scores at rot_z = 90 equal
    the unrotated ones; rot_y = 60 changes them."""
    torch.manual_seed(0)
    model = SphericalUNet((H, W)).eval()
    scores = {}
    for angles in ((0, 0), (0, 90), (60, 0)):
        flags = ["--use-equirect-rotate", "--rot-y", str(angles[0]), "--rot-z", str(angles[1])]
        opt = opts.parse(common_args(dirs) + flags + ["--limit", "4"])
        test_set = load_datasets(opt, 0, 1, VRVideo)[1]
        assert isinstance(test_set, FixedRotation) == (angles != (0, 0))
        with pytest.raises(ValueError, match=r"the test split of .* has 1 frame\(s\) to evaluate"):
            evaluated_keys(test_set, 1)  # the startup check names the dataset, rotated or not
        scores[angles] = evaluate(model, test_set, opt, torch.device("cpu"))
    for row in ("model", "center_prior"):
        for metric in ("CC", "NSS", "KLD", "SIM", "AUC-J", "sAUC"):
            torch.testing.assert_close(
                scores[0, 90][row][metric], scores[0, 0][row][metric], rtol=1e-4, atol=1e-6, msg=f"{row} {metric}"
            )
    assert abs(scores[60, 0]["model"]["CC"] - scores[0, 0]["model"]["CC"]) > 1e-3


def test_rotation_augmented_training_is_reproducible(dirs):
    # Two epochs (the draws change with the epoch), in this process and with a DataLoader worker: the same weights.
    args = common_args(dirs) + ["-epochs", "2", "--max-steps", "1", "--use-equirect-rotate"]

    def weights(exp_id, *flags, main=train_unet.main):
        main(args + ["-expID", exp_id, *flags])
        return torch.load(os.path.join(dirs[1], exp_id, LATEST), weights_only=True)["model"]

    first, again = weights("rot_a"), weights("rot_b", "--num-workers", "1")
    for name, value in first.items():
        torch.testing.assert_close(again[name], value, rtol=0, atol=0, msg=name)


def test_rotation_augmented_convlstm_with_sphereconv_trains(dirs):
    args = common_args(dirs) + ["-expID", "rot_lstm", "-epochs", "1", "--max-steps", "1", "--use-equirect-rotate"]
    train_lstm.main(args + ["--sequence-len", "2", "--batch-size", "1", "--conv-type", "sphereconv"])
    saved = torch.load(os.path.join(dirs[1], "rot_lstm", LATEST), weights_only=True)
    assert saved["opts"]["conv_type"] == "sphereconv" and saved["opts"]["use_equirect_rotate"]
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


# --- --own-previous: training on the model's own previous maps, one step of deployment --------------------------------


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_earlier_items_carry_the_frames_and_map_their_previous_map_is_made_from(dirs, train_set, steps):
    earlier_set = VRVideo(dirs[0], H, W, 2, prev_offset=2, gt_source="gaze", earlier=True, earlier_steps=steps)
    assert earlier_set.items == train_set.items
    rotation = rotation_of(60, 30)  # the earlier frames turn with the item
    counts = []
    for index, (vid, fid) in enumerate(train_set.items):
        item = earlier_set.sample(index, rotation)
        plain = train_set.sample(index, rotation)
        for got, expected in zip(item[:3], plain):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
        frames, start_map, count = item[3:]
        assert frames.shape == (steps, 3, H, W) and count.dtype == torch.int64
        chain = [fid]  # walked back independently: each frame's previous frame, while it is an item, up to K
        while len(chain) <= steps and train_set.previous_key(vid, chain[-1]) is not None:
            chain.append(train_set.previous_key(vid, chain[-1]))
        chain = chain[1:]
        assert count == len(chain)
        counts.append(len(chain))
        for n, prev in enumerate(chain, start=1):  # slot K - n holds the frame n steps back
            earlier_frame, earlier_previous, _ = train_set.sample(train_set.items.index((vid, prev)), rotation)
            torch.testing.assert_close(frames[steps - n], earlier_frame, rtol=0, atol=0)
            if n == len(chain):
                torch.testing.assert_close(start_map, earlier_previous, rtol=0, atol=0)
        torch.testing.assert_close(frames[: steps - len(chain)], torch.zeros(steps - len(chain), 3, H, W))
        if not chain:
            torch.testing.assert_close(start_map, plain[1], rtol=0, atol=0)
    assert min(counts) == 0 and max(counts) == min(steps, 2)  # 6 frames 2 apart: chains of 0, 1 and 2
    with pytest.raises(TypeError, match="earlier must be True or False"):
        VRVideo(dirs[0], H, W, 2, prev_offset=2, gt_source="gaze", earlier=1)
    with pytest.raises(ValueError, match="earlier_steps must be an int >= 1"):
        VRVideo(dirs[0], H, W, 2, prev_offset=2, gt_source="gaze", earlier=True, earlier_steps=0)


def test_own_previous_maps_are_what_deployment_feeds_the_next_frame():
    torch.manual_seed(0)
    model = SphericalUNet((H, W), conv_type="sphereconv", frame_jitter=0.5)  # jitter and BN differ in train mode
    opt = opts.parse(["-expID", "x", "--frame-h", str(H), "--frame-w", str(W), "--target-scale", "1000"])
    frames = torch.rand(4, 3, H, W)
    first_previous = normalise_previous(torch.rand(1, 1, H, W), reference_mass(H, W))
    model.eval()
    # A video of four frames, each one's previous map the prediction for the one before, as deployed.
    steps = [("a", frames[0], first_previous[0]), ("b", frames[1], "a"), ("c", frames[2], "b"), ("d", frames[3], "c")]
    deployed = list(predict_video(model, steps, opt, torch.device("cpu")))
    model.train()
    # Rows: the chains a -> (b's map), a, b -> (c's map), a, b, c -> (d's map); K = 3, right-aligned, garbage before.
    chains = torch.rand(3, 3, 3, H, W)
    chains[0, 2], chains[1, 1:], chains[2] = frames[0], frames[:2], frames[:3]
    counts = torch.tensor([1, 2, 3])
    starts = first_previous.expand(3, -1, -1, -1)
    own = own_previous_maps(model, chains, starts, counts, opt, previous_map_tools(H, W)[1])
    assert model.training
    for row in range(3):
        torch.testing.assert_close(own[row], deployed[row + 1][2], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("steps", [1, 3])
def test_own_previous_training_feeds_the_models_own_maps(dirs, monkeypatch, steps):
    seen, made = [], []

    def build_model(opt):
        model = train_unet.SphericalUNet((opt.frame_h, opt.frame_w), conv_type=opt.conv_type)
        model.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()) if m.training else None)
        return model

    def own_maps(*args):
        frames, counts = args[1], args[3]
        for chain, count in zip(frames, counts):  # each chain's frames fill its last `count` slots, as in the item
            assert 1 <= count <= steps and chain[steps - count :].abs().sum((1, 2, 3)).min() > 0
            assert not chain[: steps - count].any()
        made.append(own_previous_maps(*args))
        return made[-1]

    monkeypatch.setattr(train_unet, "build_model", build_model)
    monkeypatch.setattr(train_unet, "own_previous_maps", own_maps)
    args = common_args(dirs) + ["-expID", f"own{steps}", "-epochs", "1", "--max-steps", "2", "--own-previous", "1"]
    args += ["--own-previous-steps", str(steps)]
    train_unet.main(args + ["--conv-type", "sphereconv"])
    assert len(seen) == len(made) == 2
    saved = torch.load(os.path.join(dirs[1], f"own{steps}", LATEST), weights_only=True)
    scale = saved["opts"]["target_scale"]
    train_set = VRVideo(dirs[0], H, W, 2, prev_offset=2, gt_source="gaze")
    rows = 0
    for fed, own in zip(seen, made):
        pending = list(own)  # made only for the items that have an earlier frame, in batch order
        for row in fed:  # each item: its own earlier map, or the prior where it has no earlier frame
            if pending and torch.equal(row, pending[0] * scale):
                pending.pop(0)
                rows += 1
            else:
                torch.testing.assert_close(row, train_set.prior * scale, rtol=0, atol=0)
        assert not pending  # every map made was fed
    assert rows > 0
    assert saved["opts"]["own_previous"] == 1 and saved["opts"]["own_previous_steps"] == steps
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
