"""The training scripts under careless or hostile use (issue 21): a diverged update is never saved, runs never
overwrite each other, the demo never writes over its inputs, the quickstart reads the run it trained, and bad files
or values give errors that name them. Tiny synthetic set (3 videos x 6 frames of 16 x 32); hostile files are made
here."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from PIL import Image

import opts
import train_unet
from engine.common import LATEST, nonfinite_tensors
from engine.experiment import LOCK
from tests.conftest import common_args
from tests.test_train import REPO, checkpoint, log_of, subprocess_env


def run(dirs, exp_id, *extra):
    return train_unet.main(common_args(dirs) + ["-expID", exp_id, "-epochs", "1", "--max-steps", "1", *extra])


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def good_run(dirs):
    """1 epoch of 1 step at lr 0.01, a periodic checkpoint kept: the run the tests below continue or refuse to
    replace (each copies it first when it changes it)."""
    run(dirs, "good", "--save-interval", "1")
    return os.path.join(dirs[1], "good")


def copy_run(good_run, dirs, exp_id):
    return shutil.copytree(good_run, os.path.join(dirs[1], exp_id))


def test_the_guard_never_saves_diverged_weights(dirs, good_run):
    # lr 1e37: epoch 2's only step has a finite loss (the good weights), its update makes weights of about 1e35
    # (finite) whose loss is infinite. That last update is checked before the checkpoint is written.
    folder = copy_run(good_run, dirs, "poisoned")
    latest = os.path.join(folder, LATEST)
    before, log_before = read(latest), log_of(dirs, "poisoned")
    message = rf"weights after epoch 2 have diverged.*last good checkpoint is kept: {latest}"
    with pytest.raises(SystemExit, match=message):
        run(dirs, "poisoned", "-epochs", "2", "-resume", "-lr", "1e37")
    assert read(latest) == before and log_of(dirs, "poisoned") == log_before
    kept = checkpoint(dirs, "poisoned")
    assert kept["epoch"] == 1 and not [k for k, v in kept["model"].items() if not torch.isfinite(v).all()]
    report = train_unet.main(common_args(dirs) + ["-expID", "poisoned", "-test", "--limit", "2"])
    assert all(torch.isfinite(torch.tensor(list(report["model"].values()))))


def test_nonfinite_tensors_names_parameters_buffers_and_optimizer_state():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 1, 3, 3)).sum().backward()
    optimizer.step()
    assert nonfinite_tensors(model, optimizer) == []
    model[1].running_var[1] = float("inf")
    optimizer.state[model[0].bias]["momentum_buffer"][0] = float("nan")
    assert nonfinite_tensors(model, optimizer) == ["1.running_var", "optimizer state 1 momentum_buffer"]


def test_a_second_run_in_the_same_folder_is_refused_and_a_killed_runs_lock_is_free(dirs):
    # Another process holds the experiment folder (as a training run does): a second run refuses, naming the folder,
    # the holder and the lock. Killed with SIGKILL, it leaves the lock file behind, and a new run proceeds.
    opt = opts.parse(common_args(dirs) + ["-expID", "busy"])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, opts\nfrom engine.experiment import claim_experiment\n"
         "with claim_experiment(opts.parse(sys.argv[1:])):\n    print('held', flush=True)\n    time.sleep(120)\n",
         *common_args(dirs), "-expID", "busy"],
        env=subprocess_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        lock = os.path.join(opt.save_dir, LOCK)
        message = rf"{opt.save_dir} is in use by another training run \(process {holder.pid}, lock {lock}\)"
        with pytest.raises(RuntimeError, match=message):
            run(dirs, "busy")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert os.path.isfile(lock) and not os.path.exists(os.path.join(opt.save_dir, "log.jsonl"))
    run(dirs, "busy")
    assert len(log_of(dirs, "busy")) == 1 and read(lock) == f"{os.getpid()}\n".encode()


def test_a_finished_run_is_continued_or_replaced_only_when_asked(dirs, good_run):
    folder = copy_run(good_run, dirs, "finished")
    saved = {name: read(os.path.join(folder, name)) for name in os.listdir(folder) if name.endswith((".pt", ".json"))}
    message = r"already holds a run \(checkpoint_epoch0001.pt, checkpoint_latest.pt, log.jsonl\)"
    with pytest.raises(FileExistsError, match=message + ": continue it with -resume.*--overwrite"):
        run(dirs, "finished", "-lr", "0.02")
    assert {name: read(os.path.join(folder, name)) for name in saved} == saved
    with pytest.raises(ValueError, match=rf"-resume: {os.path.join(folder, LATEST)} is at epoch 1; -epochs 1 leaves"):
        run(dirs, "finished", "-resume")
    assert read(os.path.join(folder, LATEST)) == saved[LATEST]

    with pytest.raises(ValueError, match=r"--overwrite would delete -loadModel .*checkpoint_epoch0001.pt"):
        run(dirs, "finished", "--overwrite", "-loadModel", os.path.join(folder, "checkpoint_epoch0001.pt"))
    assert {name: read(os.path.join(folder, name)) for name in saved} == saved

    # --overwrite: the previous run's files go first (its periodic checkpoint would otherwise sit beside the new run's).
    run(dirs, "finished", "-lr", "0.02", "--overwrite")
    assert checkpoint(dirs, "finished")["opts"]["lr"] == 0.02 and len(log_of(dirs, "finished")) == 1
    assert not os.path.exists(os.path.join(folder, "checkpoint_epoch0001.pt"))  # --save-interval 10 this time


def test_temporary_files_of_killed_runs_are_deleted_and_only_those(dirs, good_run):
    folder = copy_run(good_run, dirs, "leftovers")
    ours = [f".{LATEST}.{'a1' * 16}.tmp", f".checkpoint_epoch0003.pt.{'0f' * 16}.tmp", f".log.jsonl.{'b2' * 16}.tmp"]
    others = [f".{LATEST}.notahex.tmp", "notes.tmp", f"{LATEST}.{'a1' * 16}.tmp"]
    for name in ours + others:
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"x" * 10)
    run(dirs, "leftovers", "-epochs", "2", "-resume")
    assert checkpoint(dirs, "leftovers")["epoch"] == 2
    left = set(os.listdir(folder))
    assert not left & set(ours) and set(others) <= left


def test_demo_never_writes_over_its_inputs(dirs, good_run, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(2):
        Image.open(os.path.join(dirs[0], "video_000", f"000{k}.jpg")).save(frames / f"000{k}.png")
    before = {name: read(frames / name) for name in os.listdir(frames)}
    demo = common_args(dirs) + ["-expID", "good", "-demo"]
    with pytest.raises(ValueError, match=rf"--demo-out {frames} is the -demo folder"):
        train_unet.main(demo + [str(frames), "--demo-out", str(frames)])
    with pytest.raises(ValueError, match=r"0000.png would be written over the input"):
        train_unet.main(demo + [str(frames / "0000.png"), "--demo-out", str(frames)])
    assert {name: read(frames / name) for name in os.listdir(frames)} == before
    shutil.copy(os.path.join(dirs[0], "video_000", "0001.jpg"), frames / "0001.jpg")
    with pytest.raises(ValueError, match="0001.jpg and 0001.png would give the same outputs"):
        train_unet.main(demo + [str(frames), "--demo-out", str(tmp_path / "out")])
    # An image beside its outputs is fine when no name is shared: pano.jpg -> pano.npy, pano.png.
    shutil.copy(os.path.join(dirs[0], "video_000", "0001.jpg"), tmp_path / "pano.jpg")
    _, names = train_unet.main(demo + [str(tmp_path / "pano.jpg"), "--demo-out", str(tmp_path)])
    assert names == ["pano"] and os.path.isfile(tmp_path / "pano.png")


def test_quickstart_evaluates_and_checks_the_run_it_trained(tmp_path):
    # A stand-in for python records the training, test and demo commands and runs the rest (option parsing, the
    # final check). The check must read <--exp-dir>/quickstart: its log and metrics are written here, and
    # exp/quickstart is left as it is (absent or another run).
    log = tmp_path / "commands"
    fake = tmp_path / "python"
    fake.write_text(
        '#!/usr/bin/env bash\ncase "$1" in\n  train_unet.py) echo "$@" >> "$LOG" ;;\n  -m) ;;\n'
        f'  *) exec {sys.executable} "$@" ;;\nesac\n'
    )
    fake.chmod(0o755)
    exp, data = tmp_path / "my exp", tmp_path / "data"
    (exp / "quickstart").mkdir(parents=True)
    (exp / "quickstart" / "log.jsonl").write_text('{"train_loss": 2.0}\n{"train_loss": 1.0}\n')
    metrics = {"CC": 0.5, "KLD": 1.0}
    (exp / "quickstart" / "test_metrics.json").write_text(json.dumps({"model": metrics, "center_prior": metrics}))
    (data / "video_009").mkdir(parents=True)
    (data / "index.json").write_text('{"train": [], "test": ["video_009"]}')
    (data / "video_009" / "0000.jpg").write_bytes(b"")
    env = dict(subprocess_env(), PYTHON=str(fake), LOG=str(log))
    script = os.path.join(REPO, "tools", "quickstart.sh")
    result = subprocess.run(
        ["bash", script, "--exp-dir", str(exp), "--data-dir", str(data)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert f"outputs: {exp / 'quickstart'}" in result.stdout and "quickstart check passed" in result.stdout
    train, test, demo = log.read_text().splitlines()
    assert train.endswith(f"--overwrite --exp-dir {exp} --data-dir {data}")
    run_args = f"-expID quickstart --exp-dir {exp} --data-dir {data} --device auto"
    assert test == f"train_unet.py {run_args} -test --oracle"
    assert demo == f"train_unet.py {run_args} -demo {data / 'video_009' / '0000.jpg'}"


def test_unreadable_or_incomplete_checkpoints_are_named(dirs, good_run, tmp_path):
    good = read(os.path.join(good_run, LATEST))
    test = common_args(dirs) + ["-expID", "named", "-test", "-loadModel"]
    for name, content in (("empty.pt", b""), ("truncated.pt", good[: len(good) // 2]), ("text.pt", b"not torch")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=rf"checkpoint {path} cannot be read \({len(content)} bytes"):
            train_unet.main(test + [str(path)])
    full = torch.load(os.path.join(good_run, LATEST), weights_only=True)
    crafted = {key: full[key] for key in ("model", "epoch", "opts")}  # no optimizer or random state
    folder = os.path.join(dirs[1], "crafted")
    os.makedirs(folder)
    torch.save(crafted, os.path.join(folder, LATEST))
    with pytest.raises(ValueError, match=rf"{os.path.join(folder, LATEST)} is not a checkpoint .*: no optimizer, rng"):
        run(dirs, "crafted", "-epochs", "2", "-resume")
    del crafted["model"]["conv1.weight"]
    torch.save(crafted, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=rf"(?s)weights in {tmp_path / 'partial.pt'} do not fit.*conv1.weight"):
        train_unet.main(test + [str(tmp_path / "partial.pt")])


def test_an_empty_test_split_fails_before_training(dirs, tmp_path):
    copy = shutil.copytree(dirs[0], tmp_path / "data")
    index = json.loads((copy / "index.json").read_text())
    (copy / "index.json").write_text(json.dumps({"train": index["train"], "test": []}))
    args = ["--data-dir", str(copy), "--eval-interval", "1"]
    with pytest.raises(ValueError, match=rf"the test split of {copy} has 0 frame\(s\) to evaluate"):
        run(dirs, "no-test", *args)
    started = {"opts.json", "log.jsonl", LATEST} & set(os.listdir(os.path.join(dirs[1], "no-test")))
    assert not started  # written when training starts (opts.json) and after its first epoch
    run(dirs, "no-test", *args[:2], "--eval-interval", "0")  # training without evaluation still runs
    assert len(log_of(dirs, "no-test")) == 1


def test_out_of_range_values_are_refused_by_the_parser(capsys):
    for argv, message in (
        (["-lr", "1e40"], "argument -lr: expected a positive number <= 3.403e+38 (float32's largest), got '1e40'"),
        (["-lr", "nan"], "argument -lr: expected a positive number"),
        (["-lr", "0"], "argument -lr: expected a positive number"),
        (["--seed", str(2**70)], f"argument --seed: expected an integer in [0, 2**32 - 1], got '{2**70}'"),
        (["--seed", "2**70"], "argument --seed: expected an integer in [0, 2**32 - 1], got '2**70'"),
        (["--seed", "-1"], "argument --seed: expected an integer in [0, 2**32 - 1]"),
        (["--momentum", "5"], "argument --momentum: expected a number in [0, 1), got '5'"),
        (["--limit", "1"], "argument --limit: expected 0 (all) or an integer >= 2 (sAUC needs 2 frames), got '1'"),
        (["--batch-size", "0"], "argument --batch-size: expected a positive integer, got '0'"),
        (["--batch-size", "1.5"], "argument --batch-size: expected a positive integer, got '1.5'"),
        (["--max-steps", "-1"], "argument --max-steps: expected an integer >= 0, got '-1'"),
        (["--max-steps", "x"], "argument --max-steps: expected an integer >= 0, got 'x'"),
        (["--target-scale", "inf"], "argument --target-scale: expected a positive finite number, got 'inf'"),
        (["--target-scale", "nan"], "argument --target-scale: expected a positive finite number, got 'nan'"),
        (["--weight-decay", "nan"], "argument --weight-decay: expected a finite number >= 0, got 'nan'"),
        (["--weight-decay=-1e-5"], "argument --weight-decay: expected a finite number >= 0, got '-1e-5'"),
        (["-resume", "--overwrite"], "give -resume (continue this experiment) or --overwrite (replace it), not both"),
    ):
        with pytest.raises(SystemExit):
            opts.parse(argv)
        assert message in capsys.readouterr().err, argv
    accepted = opts.parse(["-lr", "1e37", "--seed", str(2**32 - 1), "--momentum", "0", "--limit", "2"])
    assert (accepted.lr, accepted.seed, accepted.momentum, accepted.limit) == (1e37, 2**32 - 1, 0.0, 2)
