"""The training, evaluation and demo scripts on a tiny synthetic set (3 videos x 6 frames of 16 x 32).

One short reference run (2 epochs of 2 steps) is shared: a run killed with SIGKILL and resumed reaches exactly its
weights, 2 DDP processes (gloo) reach its losses, a NaN stops a continuation of it, and -test / -demo read it.
"""

import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import opts
import ref
import train_lstm
import train_unet
from datasets.data import VRVideo, atomic_write, center_prior, reference_mass
from engine import demo, distributed
from engine.common import LATEST, load_datasets
from engine.evaluate import METRICS, evaluate
from models import SphericalUNet
from sconv import metrics
from sconv.module.smse import SphereMSE
from tests.conftest import H, W, common_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def subprocess_env():
    # Same thread count as this process: CPU results are then bit-identical between the two. PYTHON: the shell
    # scripts run this interpreter, not whichever python3 comes first on PATH.
    return dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONPATH=REPO, PYTHON=sys.executable)


def checkpoint(dirs, exp_id, name=LATEST):
    return torch.load(os.path.join(dirs[1], exp_id, name), weights_only=True)


def log_of(dirs, exp_id):
    with open(os.path.join(dirs[1], exp_id, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def reference_run(dirs):
    """2 epochs of 2 steps of 2 frames, uninterrupted."""
    train_unet.main(common_args(dirs) + ["-expID", "reference", "-epochs", "2"])
    return checkpoint(dirs, "reference")


def test_reference_run_checkpoint_and_log(dirs, reference_run):
    assert reference_run["epoch"] == 2
    assert reference_run["opts"]["model"] == "unet" and reference_run["opts"]["lr"] == 0.01
    assert {"torch", "numpy", "python"} <= reference_run["rng"].keys()
    log = log_of(dirs, "reference")
    assert [r["epoch"] for r in log] == [1, 2] and all(r["steps"] == 2 and r["processes"] == 1 for r in log)
    assert all(math.isfinite(r["train_loss"]) for r in log)
    assert reference_run["train_loss"] == log[-1]["train_loss"]
    assert not [n for n in os.listdir(os.path.join(dirs[1], "reference")) if n.endswith(".tmp")]


def test_resume_after_kill_reaches_the_same_weights(dirs, reference_run):
    args = common_args(dirs) + ["-expID", "killed", "-epochs", "2"]
    latest = os.path.join(dirs[1], "killed", LATEST)
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train_unet.py"), *args],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not os.path.exists(latest) and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)  # during epoch 2
    finally:
        process.wait()
    assert checkpoint(dirs, "killed")["epoch"] == 1

    train_unet.main(args + ["-resume"])
    resumed = checkpoint(dirs, "killed")
    assert resumed["epoch"] == 2
    assert resumed["model"].keys() == reference_run["model"].keys()
    for name, tensor in reference_run["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    for key, state in reference_run["optimizer"]["state"].items():
        assert torch.equal(resumed["optimizer"]["state"][key]["momentum_buffer"], state["momentum_buffer"])
    assert [r["train_loss"] for r in log_of(dirs, "killed")] == [r["train_loss"] for r in log_of(dirs, "reference")]


def test_ddp_two_processes_match_one(dirs, reference_run):
    # 2 gloo processes with 1 frame each = 1 process with the global batch of 2. BatchNorm statistics are the global
    # batch's (GlobalBatchNorm2d), so this is the same computation up to float summation order.
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        os.path.join(REPO, "train_unet.py"), *common_args(dirs), "-expID", "ddp", "-epochs", "2",
    ]  # fmt: skip
    env = dict(subprocess_env(), OMP_NUM_THREADS="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = log_of(dirs, "ddp")
    assert [r["processes"] for r in log] == [2, 2]
    expected = [r["train_loss"] for r in log_of(dirs, "reference")]
    assert [r["train_loss"] for r in log] == pytest.approx(expected, rel=1e-5)
    ddp = checkpoint(dirs, "ddp")
    assert ddp["model"].keys() == reference_run["model"].keys()  # plain BatchNorm2d keys: loads without DDP
    for name, tensor in reference_run["model"].items():
        if tensor.is_floating_point():
            error = (ddp["model"][name] - tensor).abs().max() / tensor.abs().max()
            # Measured: at most 1.2e-4 (bn1.bias), float32 sums in another order; a BatchNorm parameter left out of
            # the optimiser, or per-process statistics, give errors of order 1.
            assert error < 1e-3, (name, error)
        else:
            assert torch.equal(ddp["model"][name], tensor), name


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(dirs, reference_run):
    shutil.copytree(os.path.join(dirs[1], "reference"), os.path.join(dirs[1], "diverge"))
    latest = os.path.join(dirs[1], "diverge", LATEST)
    with open(latest, "rb") as f:
        before = f.read()
    log_before = log_of(dirs, "diverge")
    with pytest.raises(SystemExit, match=r"loss is (nan|inf) at epoch 3, step 2.*last good checkpoint is kept"):
        train_unet.main(common_args(dirs) + ["-expID", "diverge", "-epochs", "3", "-resume", "-lr", "1e30"])
    with open(latest, "rb") as f:
        assert f.read() == before
    assert log_of(dirs, "diverge") == log_before


def test_atomic_write_never_leaves_a_broken_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_write(path, lambda f: torch.save({"weights": torch.arange(3)}, f))

    def killed_mid_write(f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, killed_mid_write)
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.arange(3))
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_sequence_loss_is_the_originals():
    torch.manual_seed(0)
    out, target = torch.randn(2, 3, 1, H, W), torch.rand(2, 3, 1, H, W)
    area = torch.tensor(
        [(2 * math.pi / W) * (math.cos(i * math.pi / H) - math.cos((i + 1) * math.pi / H)) for i in range(H)]
    )
    loss = train_lstm.sequence_loss(SphereMSE(H, W), out, target)
    # The original's loop: sum over the T steps of the criterion (sum of A_i (out - target)^2, mean over the batch).
    expected = sum(((out[:, t] - target[:, t]) ** 2 * area[:, None]).sum() / 2 for t in range(3))
    torch.testing.assert_close(loss, expected.float(), rtol=1e-5, atol=0)
    plain = train_lstm.sequence_loss(torch.nn.MSELoss(), out, target)
    expected = sum(((out[:, t] - target[:, t]) ** 2).mean() for t in range(3))
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=0)


def direct_scores(pred, gt, fixations, others):
    pred = (pred - pred.amin((1, 2), keepdim=True)) / (
        pred.amax((1, 2), keepdim=True) - pred.amin((1, 2), keepdim=True)
    )
    return {
        "CC": metrics.cc(pred, gt).mean().item(),
        "NSS": metrics.nss(pred, fixations).mean().item(),
        "KLD": metrics.kld(pred, gt).mean().item(),
        "SIM": metrics.sim(pred, gt).mean().item(),
        "AUC-J": metrics.auc_judd(pred, fixations).mean().item(),
        "sAUC": metrics.sauc(pred, fixations, others).mean().item(),
    }


def _as_previous(prediction):
    """A prediction made into a previous map by hand: negatives to 0, scaled to a ground-truth map's sphere integral."""
    area = torch.tensor(
        [(2 * math.pi / W) * (math.cos(i * math.pi / H) - math.cos((i + 1) * math.pi / H)) for i in range(H)]
    ).double()
    positive = prediction.double().clamp(min=0)
    return (positive * reference_mass(H, W) / (positive * area[:, None]).sum()).float()


def test_test_mode_is_the_deployed_run(dirs, reference_run):
    report = train_unet.main(common_args(dirs) + ["-expID", "reference", "-test", "--limit", "5"])
    with open(os.path.join(dirs[1], "reference", "test_metrics.json")) as f:
        assert json.load(f) == json.loads(json.dumps(report))
    assert report["epoch"] == 2 and report["test_frames"] == 5 and "oracle" not in report
    latest = os.path.join(dirs[1], "reference", LATEST)
    elsewhere = train_unet.main(common_args(dirs) + ["-expID", "new", "-test", "-loadModel", latest, "--limit", "5"])
    assert os.path.isfile(os.path.join(dirs[1], "new", "test_metrics.json")) and elsewhere["model"] == report["model"]

    # Direct: the checkpoint's model over the first 5 frames of the test video in order; frames 0 and 1 get the
    # equator prior, frame k >= 2 the model's own prediction of frame k - 2 (--prev-offset 2), normalised. No
    # ground truth of an earlier frame is used. sAUC's negatives: the fixations of the other evaluated frames.
    data = dirs[0]
    test_set = VRVideo(data, H, W, None, train=False, index_file=os.path.join(data, "index.json"))
    (video,) = test_set.videos
    model = SphericalUNet((H, W))
    model.load_state_dict(reference_run["model"])
    model.eval()
    predictions, prior = [], _as_previous(torch.from_numpy(center_prior(H, W)))
    for k in range(5):
        frame = test_set.frame(video, f"{k:04d}")
        previous = prior if k < 2 else _as_previous(predictions[k - 2])
        with torch.no_grad():
            predictions.append(model(frame[None], previous[None, None] * ref.target_scale)[0, 0] / ref.target_scale)
    pred = torch.stack(predictions).double()
    gt = torch.stack([test_set.target(video, f"{k:04d}")[0] for k in range(5)]).double()
    fixations = torch.from_numpy(np.stack([test_set.fixations(k) for k in range(5)])).double()
    others = fixations.sum(0) - fixations
    for name, saliency in {"model": pred, "center_prior": prior.double().expand(5, H, W)}.items():
        expected = direct_scores(saliency, gt, fixations, others)
        for metric, value in expected.items():
            assert report[name][metric] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, metric)
        # AUC-B draws random negatives (100 splits per frame): near its expectation, estimated here with 5000.
        generator = torch.Generator().manual_seed(1)
        borji = metrics.auc_borji(saliency, fixations, splits=5000, generator=generator).mean().item()
        assert report[name]["AUC-B"] == pytest.approx(borji, abs=0.06)

    # The oracle figures only on request, labelled apart.
    oracle = train_unet.main(common_args(dirs) + ["-expID", "reference", "-test", "--limit", "5", "--oracle"])
    assert oracle["model"] == report["model"] and "oracle (teacher-forced)" in oracle["oracle"]["note"]
    assert set(oracle["oracle"]) == {"note", "model", "copy_previous_ground_truth"}


def test_deployed_scores_ignore_the_previous_frames_ground_truth(dirs, reference_run, tmp_path):
    # Absurd gaze for frame 2 of the test video (every viewer at the south pole): the deployed scores of every other
    # frame are unchanged (frame 4's previous map is the prediction of frame 2, not its gaze), while the oracle's
    # score of frame 4, which is given frame 2's ground truth, changes. sAUC is left out (its negatives are the other
    # frames' fixations, by definition), and so is AUC-B (its random pixels come from one generator drawn frame after
    # frame, so frame 2's new fixation count shifts the later frames' draws).
    copy = shutil.copytree(dirs[0], tmp_path / "data")
    with open(copy / "vinfo.pkl", "rb") as f:
        vinfo = pickle.load(f)
    video = json.load(open(copy / "index.json"))["test"][0]
    model = SphericalUNet((H, W))
    model.load_state_dict(reference_run["model"])
    scores = []
    for root in (dirs[0], copy):
        opt = opts.parse(common_args(dirs) + ["--data-dir", str(root), "--gt-source", "gaze", "--gt-cache", "none"])
        _, test_set = load_datasets(opt, 0, 1, VRVideo)
        scores.append(evaluate(model, test_set, opt, torch.device("cpu"), oracle=True, per_frame=True)["per_frame"])
        vinfo[video]["0002"] = [(0.1 * i, 0.999) for i in range(10)]
        with open(copy / "vinfo.pkl", "wb") as f:
            pickle.dump(vinfo, f)
    before, after = scores
    assert len(before["model"]) == 6
    for key in before["model"]:
        if key != (video, "0002"):
            for metric in set(METRICS) - {"sAUC", "AUC-B"}:
                assert after["model"][key][metric] == before["model"][key][metric], (key, metric)
    assert after["model"][video, "0002"]["NSS"] != before["model"][video, "0002"]["NSS"]  # the gaze did change
    oracle_before, oracle_after = before["oracle_model"][video, "0004"], after["oracle_model"][video, "0004"]
    assert [m for m in ("CC", "KLD", "SIM") if oracle_after[m] != oracle_before[m]] == ["CC", "KLD", "SIM"]


def test_demo_image_folder_and_sequence(dirs, reference_run, tmp_path):
    data = dirs[0]
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for name in ("0002.jpg", "0003.jpg", "0004.jpg"):
        shutil.copy(os.path.join(data, "video_000", name), frames_dir / name)
    big = tmp_path / "pano.png"
    Image.open(frames_dir / "0002.jpg").resize((4 * W, 4 * H)).save(big)

    out_dir, names = train_unet.main(
        common_args(dirs) + ["-expID", "reference", "-demo", str(frames_dir), "--demo-out", str(tmp_path / "out")]
    )
    assert names == ["0002", "0003", "0004"]
    maps = [np.load(os.path.join(out_dir, n + ".npy")) for n in names]
    for m in maps:
        assert m.shape == (H, W) and m.dtype == np.float32 and m.min() == 0 and m.max() == pytest.approx(1)
        assert Image.open(os.path.join(out_dir, names[0] + ".png")).size == (W, H)

    # A video, run as the test runs one (--prev-offset 2): frames 0 and 1 get the prior, frame 2 the first prediction.
    model = SphericalUNet((H, W))
    model.load_state_dict(reference_run["model"])
    model.eval()
    outputs = []
    for k, (name, saved) in enumerate(zip(names, maps)):
        image = np.asarray(Image.open(frames_dir / f"{name}.jpg").convert("RGB"), dtype=np.float32) / 255
        previous = _as_previous(torch.from_numpy(center_prior(H, W)) if k < 2 else outputs[k - 2])
        with torch.no_grad():
            out = model(torch.from_numpy(image).permute(2, 0, 1)[None], previous[None, None] * ref.target_scale)[0, 0]
        outputs.append(out / ref.target_scale)
        expected = (out - out.min()) / (out.max() - out.min())
        np.testing.assert_allclose(saved, expected.numpy(), atol=1e-5)

    out_dir, names = train_unet.main(
        common_args(dirs) + ["-expID", "reference", "-demo", str(big), "--demo-out", str(tmp_path / "big")]
    )
    assert names == ["pano"]
    assert Image.open(os.path.join(out_dir, "pano.png")).size == (4 * W, 4 * H)
    assert np.load(os.path.join(out_dir, "pano.npy")).shape == (H, W)


def test_overlay_and_colormap():
    assert demo.colorize(np.array([0.0, 1.0])).tolist() == [[0, 0, 128], [128, 0, 0]]
    assert demo.colorize(np.array([0.5])).tolist() == [[128, 255, 128]]  # halfway from cyan to yellow
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 16, 3), dtype=np.uint8))
    unchanged = demo.overlay(image, np.zeros((4, 8), np.float32))
    assert np.array_equal(np.asarray(unchanged), np.asarray(image))
    full = np.asarray(demo.overlay(image, np.ones((4, 8), np.float32)), dtype=np.float64)
    np.testing.assert_allclose(full, 0.4 * np.asarray(image) + 0.6 * np.array([128, 0, 0]), atol=0.51)


def test_demo_reads_a_video_through_opencv(monkeypatch, tmp_path):
    # OpenCV is optional; a stand-in with its VideoCapture interface checks the reading (BGR frames, in order).
    blue_bgr = np.zeros((4, 8, 3), np.uint8)
    blue_bgr[..., 0] = 255

    class VideoCapture:
        def __init__(self, path):
            self.frames = [blue_bgr, blue_bgr * 0]
            self.released = False

        def isOpened(self):
            return True

        def read(self):
            return (True, self.frames.pop(0)) if self.frames else (False, None)

        def release(self):
            self.released = True

    fake = type(sys)("cv2")
    fake.VideoCapture = VideoCapture
    monkeypatch.setitem(sys.modules, "cv2", fake)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not read by the stand-in")
    frames = list(demo.read_demo_frames(str(video)))
    assert [name for name, _ in frames] == ["frame_000000", "frame_000001"]
    assert np.asarray(frames[0][1])[0, 0].tolist() == [0, 0, 255]  # RGB


def test_demo_rejects_what_it_cannot_read(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    with pytest.raises(ValueError, match="opencv"):
        list(demo.read_demo_frames(str(video)))
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(demo.read_demo_frames(str(tmp_path / "missing.jpg")))
    with pytest.raises(ValueError, match="no image"):
        list(demo.read_demo_frames(str(tmp_path)))


def test_convlstm_trains_tests_and_demos(dirs, tmp_path):
    # The planar ConvLSTM keeps this short; the spherical one is tested in test_models.py.
    args = common_args(dirs) + ["-expID", "lstm", "--sequence-len", "2", "--use-sconvlstm", "0", "--batch-size", "1"]
    train_lstm.main(args + ["-epochs", "1", "--max-steps", "1", "--eval-interval", "1", "--limit", "2"])
    (record,) = log_of(dirs, "lstm")
    assert math.isfinite(record["train_loss"]) and set(record["test"]) == set(METRICS)
    saved = checkpoint(dirs, "lstm")
    assert saved["opts"]["model"] == "convlstm" and saved["opts"]["lstm_place"] == "decoder"
    assert saved["model"]["lstm.cells.0.conv.weight"].shape[:2] == (4 * 64, 64 + 64)  # the original's SconvLSTM

    report = train_lstm.main(args + ["-test", "--limit", "2", "--oracle"])
    assert report["test_frames"] == 2 and set(report["model"]) == set(METRICS) == set(report["oracle"]["model"])
    frames_dir = os.path.join(dirs[0], "video_000")
    _, names = train_lstm.main(args + ["-demo", frames_dir, "--demo-out", str(tmp_path)])
    assert names == [f"{i:04d}" for i in range(6)]
    with pytest.raises(ValueError, match="'convlstm' model"):
        train_unet.main(common_args(dirs) + ["-expID", "lstm", "-test"])


def test_planar_ablation_run(dirs):
    args = ["-expID", "planar", "-epochs", "1", "--use-sconv", "0", "--use-spooling", "false", "--use-smse", "no"]
    train_unet.main(common_args(dirs) + args)
    saved = checkpoint(dirs, "planar")
    assert saved["model"]["conv1.weight"].shape == (64, 4, 1, 1)  # 16 x 32 grid, r = pi/32: about one tap
    assert saved["model"]["conv4.weight"].shape == (256, 256, 3, 3)  # 2 x 4 grid, r = pi: 8 taps
    assert math.isfinite(log_of(dirs, "planar")[0]["train_loss"])


def test_options(capsys):
    unet = opts.parse([])
    assert (unet.frame_step, unet.prev_offset, unet.gt_source, unet.on_bad_data) == (1, 5, "auto", "raise")
    assert (unet.batch_size, unet.lr, unet.epochs, unet.sequence_len) == (32, 0.3, 200, 1)
    assert (unet.momentum, unet.weight_decay, unet.frame_h, unet.frame_w) == (0.9, 1e-5, 64, 128)
    assert unet.use_sconv and unet.use_spooling and unet.use_smse and unet.use_sconvlstm
    assert unet.data_dir == ref.data_dir and unet.save_dir == os.path.join(ref.exp_dir, "default")
    lstm = opts.parse(["--use-sconvlstm", "0", "-expID", "x"], model="convlstm")
    assert (lstm.batch_size, lstm.lr, lstm.sequence_len, lstm.use_sconvlstm) == (24, 3e-3, 6, False)
    for argv, message in (
        (["--frame-h", "60"], "--frame-h must be a multiple of 8"),
        (["--use-sconv", "maybe"], "expected a boolean"),
        (["-lr", "-1"], "argument -lr: expected a positive number"),
        (["--sequence-len", "3"], "--sequence-len is for the ConvLSTM"),
        (["-expID", "a/b"], "-expID must be a plain name"),
        (["-resume", "-loadModel", "x.pt"], "not both"),
        (["--frame-interval", "5"], "--frame-step N (use every N-th frame"),
        (["--clear-cache", "True"], "delete the --gt-cache folder"),
        (["--snapshot-fname-dir", "x"], "use -expID NAME"),
        (["--frame-step", "2", "--prev-offset", "5"], "--prev-offset 5 must be a multiple of --frame-step 2"),
        (["--on-bad-data", "ignore"], "invalid choice"),
    ):
        with pytest.raises(SystemExit):
            opts.parse(argv)
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="model must be one of"):
        opts.parse([], model="resnet")
    # The original's spellings: --exp-name names the run, -resume takes a boolean, --use-sconv False means False.
    original = opts.parse(["--exp-name", "ablation", "-resume", "True", "--use-sconv", "False", "--use-smse", "True"])
    assert (original.expID, original.resume, original.use_sconv, original.use_smse) == ("ablation", True, False, True)
    assert opts.parse(["-resume", "False"]).resume is False and opts.parse(["-resume"]).resume is True
    assert opts.parse(["--lstm-place", "bottleneck"], model="convlstm").lstm_place == "bottleneck"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="NCCL needs a GPU")
def test_process_group_on_cuda_sums_cpu_and_cuda_tensors(tmp_path):
    # The training loop sums its CPU loss tensors over the processes, the model its CUDA ones: the backend that
    # setup_distributed asks for on a GPU must take both (NCCL alone refuses CPU tensors). One process is enough to
    # reach each device's backend.
    import torch.distributed as dist

    backend = distributed.process_group_backend(torch.device("cuda"))
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        on_cpu = distributed.global_sum(torch.tensor([3.0, 2.0], dtype=torch.float64), world_size=2)
        on_cuda = torch.ones(4, device="cuda")
        dist.all_reduce(on_cuda)
    finally:
        dist.destroy_process_group()
    assert on_cpu.tolist() == [3.0, 2.0] and on_cuda.tolist() == [1.0] * 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("model", ["unet", "convlstm"])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_cuda_graph_run_is_the_eager_run(dirs, model, bf16):
    # 12 training frames in batches of 5 (U-Net), 10 sequences of 2 frames in batches of 4 (ConvLSTM): the last batch
    # of each epoch has another shape and runs eagerly. Both runs make the same steps; the capture's warm-up must
    # leave no trace (batch-norm buffers put back: without that, three extra updates of the running statistics).
    args = common_args(dirs) + ["--device", "cuda", "--max-steps", "0", "-epochs", "2"]
    args += ["--batch-size", "5"] if model == "unet" else ["--batch-size", "4", "--sequence-len", "2"]
    args += ["--bf16"] if bf16 else []
    name = f"graph_{model}_{bf16}"
    script = train_unet if model == "unet" else train_lstm
    script.main(args + ["-expID", name + "_eager"])
    script.main(args + ["-expID", name, "--cuda-graph"])
    eager, graphed = checkpoint(dirs, name + "_eager")["model"], checkpoint(dirs, name)["model"]
    tolerance = 1e-3 if bf16 else 1e-5  # without the buffers put back: 0.04 to 0.24 (H100)
    for key, value in eager.items():
        if value.is_floating_point():
            error = (graphed[key] - value).abs().max() / value.abs().max().clamp(min=1e-6)
            assert error < tolerance, (key, error.item())
        else:
            assert torch.equal(graphed[key], value), key
    losses = [[record["train_loss"] for record in log_of(dirs, run)] for run in (name + "_eager", name)]
    assert losses[1] == pytest.approx(losses[0], rel=tolerance)


def test_errors_name_what_is_wrong(dirs, tmp_path):
    with pytest.raises(ValueError, match="--batch-size 3 must be divisible"):
        train_unet.train(opts.parse(common_args(dirs) + ["--batch-size", "3"]), 0, 2, torch.device("cpu"))
    with pytest.raises(ValueError, match="--cuda-graph needs one process on a CUDA device; this run has 1 on cpu"):
        train_unet.main(common_args(dirs) + ["--cuda-graph"])
    with pytest.raises(FileNotFoundError, match="checkpoint .* not found"):
        train_unet.main(common_args(dirs) + ["-expID", "nothing-here", "-resume"])
    with pytest.raises(ValueError, match="--device"):
        distributed.setup_distributed("gpu0")
    not_a_checkpoint = tmp_path / "weights.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, not_a_checkpoint)
    with pytest.raises(ValueError, match="not a checkpoint"):
        train_unet.main(common_args(dirs) + ["-test", "-loadModel", str(not_a_checkpoint)])


@pytest.mark.parametrize(
    "script, entry",
    [("baseline_unet.sh", "train_unet.py"), ("baseline_convlstm.sh", "train_lstm.py"),
     ("baseline_unet_sphereconv.sh", "train_unet.py")],
)  # fmt: skip
@pytest.mark.parametrize("gpus", [0, 1, 2])
def test_baseline_scripts_launch(tmp_path, script, entry, gpus):
    # A stand-in for python records the command: torchrun with one process per GPU when there are several.
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/usr/bin/env bash\nif [ "$1" = -c ]; then echo "$GPUS"; else echo "$@" > "$LOG"; fi\n')
    fake_python.chmod(0o755)
    log = tmp_path / "command"
    env = dict(os.environ, PYTHON=str(fake_python), GPUS=str(gpus), LOG=str(log))
    subprocess.run(["bash", os.path.join(REPO, "tools", "baselines", script), "-expID", "mine"], env=env, check=True)
    command = log.read_text().split()
    if script == "baseline_unet_sphereconv.sh":  # the recommended configuration (docs/latitude.md)
        original = ["--conv-type", "sphereconv", "--frame-jitter", "20", "--use-equirect-rotate", "--own-previous",
                    "0.5", "--own-previous-steps", "3", "--optimizer", "adam", "--target-scale", "1000",
                    "--batch-size", "32", "-lr", "1e-3"]  # fmt: skip
    elif entry == "train_unet.py":
        original = ["--batch-size", "32", "-lr", "3e-1"]
    else:
        original = ["--batch-size", "24", "-lr", "3e-3", "--sequence-len", "6"]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if gpus == 2 else []
    assert command[: len(launcher) + 1] == launcher + [entry]
    assert " ".join(original + ["-epochs", "200"]) in " ".join(command) and command[-2:] == ["-expID", "mine"]


def test_baseline_script_runs_on_cpu(dirs):
    args = common_args(dirs) + ["-expID", "baseline", "-epochs", "1", "--max-steps", "1", "--batch-size", "1"]
    args += ["--sequence-len", "2", "--use-sconvlstm", "0"]
    env = dict(subprocess_env(), CUDA_VISIBLE_DEVICES="")
    script = os.path.join(REPO, "tools", "baselines", "baseline_convlstm.sh")
    subprocess.run(["bash", script, *args], env=env, check=True, capture_output=True)
    saved = checkpoint(dirs, "baseline")
    assert saved["opts"]["model"] == "convlstm" and saved["epoch"] == 1
    assert saved["opts"]["save_interval"] == 10 and saved["opts"]["lr"] == 0.01  # the script's; ours win


def test_split_without_index_file_is_the_originals_seeded_sample(dirs, tmp_path):
    copy = tmp_path / "no_index"
    shutil.copytree(dirs[0], copy, ignore=shutil.ignore_patterns("index.json", "*.npy"))
    opt = opts.parse(common_args(dirs) + ["--data-dir", str(copy), "--video-train", "2"])
    train_set, test_set = load_datasets(opt, 0, 1, VRVideo)
    assert (len(train_set.videos), len(test_set.videos)) == (2, 1) and len(train_set) == 12
    assert not set(train_set.videos) & set(test_set.videos)
    with pytest.raises(ValueError, match="video_train must be in"):
        load_datasets(opts.parse(common_args(dirs) + ["--data-dir", str(copy)]), 0, 1, VRVideo)  # 80 > 3


def test_bf16_autocast_changes_the_numerics_a_little(dirs):
    args = common_args(dirs) + ["-epochs", "1", "--max-steps", "1"]
    train_unet.main(args + ["-expID", "fp32"])
    train_unet.main(args + ["-expID", "bf16", "--bf16"])
    fp32, bf16 = log_of(dirs, "fp32")[0]["train_loss"], log_of(dirs, "bf16")[0]["train_loss"]
    assert 1e-6 < abs(bf16 - fp32) / fp32 < 0.05


def test_tensorboard_logging_when_installed_and_a_warning_when_not(dirs, monkeypatch, capsys):
    calls = []

    class SummaryWriter:
        def __init__(self, log_dir):
            calls.append(("dir", os.path.relpath(log_dir, dirs[1])))

        def add_scalar(self, tag, value, step):
            calls.append((tag, step))

        def flush(self):
            pass

        def close(self):
            calls.append(("closed",))

    fake = type(sys)("torch.utils.tensorboard")
    fake.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    args = common_args(dirs) + ["-epochs", "1", "--max-steps", "1", "--use-sconv", "0", "--use_tensorboard"]
    with pytest.raises(SystemExit):  # sAUC needs 2 frames: refused by the parser, before any training
        train_unet.main(args + ["-expID", "tb", "--eval-interval", "1", "--limit", "1"])
    assert calls == []
    train_unet.main(args + ["-expID", "tb", "--eval-interval", "1", "--limit", "2"])
    assert calls[0] == ("dir", os.path.join("tb", "tensorboard")) and calls[-1] == ("closed",)
    assert {call for call in calls[1:-1]} == {("train/loss", 1)} | {(f"test/{m}", 1) for m in METRICS}

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    train_unet.main(args + ["-expID", "no-tb"])
    assert "--use_tensorboard needs the tensorboard package" in capsys.readouterr().out
    assert len(log_of(dirs, "no-tb")) == 1


def test_on_bad_data_skip_is_an_option_and_reports_the_count(dirs, tmp_path, capsys):
    copy = shutil.copytree(dirs[0], tmp_path / "data")
    train_video = json.load(open(copy / "index.json"))["train"][0]
    (copy / train_video / "0003.jpg").write_bytes(b"not a jpeg")
    args = common_args(dirs) + ["--data-dir", str(copy), "-expID", "skip", "-epochs", "1", "--max-steps", "1"]
    with pytest.raises(ValueError, match="--on-bad-data skip"):
        train_unet.main(args)
    train_unet.main(args + ["--on-bad-data", "skip"])
    out = capsys.readouterr().out
    assert f"skipped 1 bad videos/frames of the train split (first: {copy / train_video / '0003.jpg'}" in out
    assert len(log_of(dirs, "skip")) == 1
