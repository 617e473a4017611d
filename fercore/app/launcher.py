"""Training processes launched by the app: thread choice, run names, start, resume and what went wrong."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fercore.atomic import atomic_write_json
from fercore.errors import UserError
from fercore.paths import PROJECT_ROOT, runs_dir
from fercore.runs import LAST, STATUS, RunDir, list_runs

if TYPE_CHECKING:
    from fercore.config import TrainConfig

LAUNCH_CONFIG = "launch.json"  # the recipe the app asked for; the run's own config.json follows it
TRAIN_LOG = "train.log"  # the training process's stdout and stderr
LAUNCH_GRACE_S = 60  # how long a launched process may take to write its first status
LAUNCH_MARK = "--- launched at "  # begins the line _launch writes to the run's log before each process's output
LOG_TAIL_BYTES = 64 * 1024  # read from the end of a training log: the page asks on every refresh
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def training_threads() -> int:
    """Threads for a new training process: every usable core that no active run holds.

    Measured on 2 cores (benchmarks, row 8): with the server and a browser on the Live tab (0.15 of a core), a run
    on both cores reached 0.85x a lone CLI run, one on a single core 0.59x; but two threads sharing a core with
    another busy process collapsed to 1/7 of one thread's speed. So: all free cores, and never more than one
    thread on occupied ones (when every core is taken, one thread: the page warns that the runs will share).
    A run started with --threads 0 holds every core.
    """
    from fercore.hardware import usable_cores

    cores = usable_cores()
    taken = sum(run.threads() or cores for run in list_runs(runs_dir()) if run.is_active())
    return max(1, cores - taken)


def new_run_dir(name: str) -> Path:
    """The directory for a new run called name under the runs folder; refuses unsafe or taken names."""
    if not RUN_NAME.fullmatch(name):
        raise UserError("a run name uses letters, digits, '.', '_' and '-' only (at most 80, no leading dot)")
    path = runs_dir() / name
    if path.exists() and not _restartable(RunDir(path)):
        raise UserError(f"a run named {name} already exists: choose another name")
    return path


def _restartable(run: RunDir) -> bool:
    """A run directory a new run may take, as `fercore train` would: a run that failed or was interrupted before
    saving anything, or a launch whose process ended without a word (no status LAUNCH_GRACE_S after it)."""
    if not run.path.is_dir() or not run.reusable():
        return False
    state = run.status().get("state")
    return state in ("failed", "interrupted") or (
        state is None and run.file(LAUNCH_CONFIG).is_file() and not launching(run))


def launching(run: RunDir) -> bool:
    """Whether the app launched run's process moments ago and it has not written its status yet."""
    try:
        launched = run.file(LAUNCH_CONFIG).stat().st_mtime
    except OSError:
        return False
    return not run.status_raw() and time.time() - launched <= LAUNCH_GRACE_S


_children: list[subprocess.Popen] = []  # launched processes, kept so that finished ones are reaped


def _launch(args: list[str], run: RunDir) -> None:
    """Start `python -m fercore ARGS` in its own session, its output going to the run's log.

    At normal priority: measured on 2 cores with the server and a browser on the Live tab (benchmarks, row 8),
    `nice -n 10` cost the run 5% (320 against 336 img/s, 0.78x against 0.85x a lone CLI run): each wake-up of
    the server or the browser pre-empted a training thread and left its partner waiting."""
    _children[:] = [child for child in _children if child.poll() is None]
    command = [sys.executable, "-m", "fercore", *args]
    # Passive OpenMP waiting: threads that would spin while a core is busy elsewhere sleep instead
    # (measured with one core busy: 236 img/s instead of 49 on two threads).
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with open(run.file(TRAIN_LOG), "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"{LAUNCH_MARK}{time.time():.3f} ({stamp}): fercore {' '.join(args)}\n".encode())
        log.flush()  # before the child's first line
        _children.append(subprocess.Popen(command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True, env=env))


def start_training(cfg: TrainConfig, name: str) -> RunDir:
    """Launch a training process for cfg into a new run called name; invalid recipes and names fail here."""
    cfg.validate()
    run = RunDir(new_run_dir(name))
    run.path.mkdir(parents=True, exist_ok=True)
    for left in (TRAIN_LOG, STATUS):  # of an attempt that saved nothing: its error must not pass for this one's
        run.file(left).unlink(missing_ok=True)
    atomic_write_json(run.file(LAUNCH_CONFIG), cfg.to_dict())
    _launch(["train", "--config", str(run.file(LAUNCH_CONFIG)), "--run-dir", str(run.path),
             "--threads", str(training_threads())], run)
    return run


def continue_training(run: RunDir) -> RunDir:
    """Launch a process that continues a stopped, interrupted or failed run from its last.pt; returns the run."""
    if run.is_active():
        raise UserError(f"run {run.name} is still running")
    if not run.file(LAST).exists():
        raise UserError(f"run {run.name} has no {LAST} to resume from (it stopped before its first save)")
    _launch(["train", "--resume", str(run.path), "--threads", str(training_threads())], run)
    return run


def log_tail(run: RunDir, lines: int = 12) -> str:
    """The last lines of the run's training log, from at most its last LOG_TAIL_BYTES ('' when there is none)."""
    try:
        with open(run.file(TRAIN_LOG), "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - LOG_TAIL_BYTES))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def launch_problem(run: RunDir) -> str | None:
    """Why the last process launched for run never got going: the error it logged before writing a status (a
    resumed run's status is its earlier process's, older than the launch), or None."""
    lines = log_tail(run, 50).splitlines()
    marks = [i for i, line in enumerate(lines) if line.startswith(LAUNCH_MARK)]
    launched = float(lines[marks[-1]].removeprefix(LAUNCH_MARK).split()[0]) if marks else 0.0
    status = run.status_raw()
    if status and status.get("updated", launched) >= launched:
        return None
    errors = [line for line in lines[marks[-1] + 1 if marks else 0:] if "error" in line.lower()]
    if errors:
        return errors[-1].removeprefix("fercore: error: ")
    return None
