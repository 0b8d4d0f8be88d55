"""The experiment folder ``<exp-dir>/<expID>`` of a training run: one run at a time (a lock), no silent reuse of a
finished run's folder, and no temporary files left by killed runs. Used by ``train_unet.py`` and ``train_lstm.py``."""

import contextlib
import fcntl
import os
import re

from engine.common import LATEST

__all__ = ["LOCK", "claim_experiment"]

LOCK = ".lock"
# A run is in the folder when it has saved an epoch: a checkpoint or a log (opts.json alone is a run stopped before its
# first epoch ended: nothing to lose, the next run rewrites it).
RUN_FILES = (LATEST, "log.jsonl")
PERIODIC = re.compile(r"checkpoint_epoch\d{4}\.pt")
# atomic_write's temporary names (".<name>.<uuid hex>.tmp") for the files above: a killed run leaves them behind.
TEMPORARY = re.compile(r"\.(checkpoint_latest\.pt|checkpoint_epoch\d{4}\.pt|log\.jsonl|opts\.json)\.[0-9a-f]{32}\.tmp")


def _previous_run(folder):
    names = sorted(os.listdir(folder))
    return [n for n in names if n in RUN_FILES or PERIODIC.fullmatch(n)], [n for n in names if TEMPORARY.fullmatch(n)]


@contextlib.contextmanager
def claim_experiment(opt, rank=0):
    """Hold ``opt.save_dir`` for a training run while the block runs (rank 0 only; the other processes never write).

    - Lock: ``<save_dir>/.lock`` is held with ``flock`` (the kernel releases it when the process ends, a killed one
      too, so a lock left by a killed run is free) and names the holder's pid; a second run refuses.
    - A folder that holds a run (a checkpoint or a log) is continued only with ``-resume``, replaced only with
      ``--overwrite`` (which deletes that run's checkpoints, log, options and test metrics first); otherwise refused.
    - Temporary files of checkpoints and logs left by killed runs (``.checkpoint_latest.pt.<hex>.tmp``, ...) are
      deleted: only those names, only in this folder, only under the lock (no other run is writing them).
    """
    if rank != 0:
        yield
        return
    folder = opt.save_dir
    os.makedirs(folder, exist_ok=True)
    lock_path = os.path.join(folder, LOCK)
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise RuntimeError(
                f"experiment folder {folder} is in use by another training run (process {holder}, lock {lock_path}): "
                "wait for it to finish or give another -expID"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        previous, temporary = _previous_run(folder)
        if previous and not opt.resume:
            if not opt.overwrite:
                raise FileExistsError(
                    f"experiment folder {folder} already holds a run ({', '.join(previous)}): continue it with "
                    "-resume, give another -expID, or pass --overwrite to replace it"
                )
            others = ("opts.json", "test_metrics.json")
            replaced = previous + [n for n in others if os.path.isfile(os.path.join(folder, n))]
            paths = {os.path.realpath(os.path.join(folder, name)) for name in replaced}
            if opt.loadModel and os.path.realpath(opt.loadModel) in paths:
                raise ValueError(
                    f"--overwrite would delete -loadModel {opt.loadModel} (a file of the run it replaces): copy it "
                    "elsewhere first or give another -expID"
                )
            for name in replaced:
                os.remove(os.path.join(folder, name))
            print(f"--overwrite: deleted the previous run's {', '.join(previous)} in {folder}")
        for name in temporary:
            os.remove(os.path.join(folder, name))
        if temporary:
            print(f"deleted {len(temporary)} temporary file(s) left by a killed run in {folder}")
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
