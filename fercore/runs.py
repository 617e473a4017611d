"""A training run is a directory: config.json, metrics.jsonl, status.json, best.pt, last.pt.

Everything but the append-only metrics log is written atomically. A run's process holds a lock file with
its pid; a run whose status says running but whose pid is gone is reported as interrupted.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no guard, the lock's O_EXCL alone
    fcntl = None

from fercore.atomic import atomic_write_json, atomic_write_jsonl, read_json
from fercore.errors import UserError
from fercore.latest import LatestKept

CONFIG, METRICS, STATUS, BEST, LAST, STOP, LOCK = (
    "config.json", "metrics.jsonl", "status.json", "best.pt", "last.pt", "STOP", "run.lock")
ACTIVE_STATES = ("starting", "running")
# each metrics.jsonl's epoch records, by path: (the file's size and mtime then, the records)
_EPOCHS: LatestKept[tuple[tuple[int, int], list[dict[str, Any]]]] = LatestKept(256)


def process_token(pid: int) -> str:
    """What tells this process from a later one given the same pid (after a reboot, say): the boot's id and the
    process's start time, from /proc; '' where there is no /proc."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot, open(f"/proc/{pid}/stat") as stat:
            return f"{boot.read().strip()}:{stat.read().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return ""


def pid_alive(pid: int | None, token: str | None = None) -> bool:
    """Whether process pid runs (a zombie does not), and is the one that token (process_token) was taken of."""
    if not pid:
        return False
    if token and (now := process_token(pid)) and now != token:
        return False  # the pid now belongs to another process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


STARTUP_PHASES = {"teachers": "the teachers' predictions"}  # the long steps of a start that report progress


def describe_startup(startup: dict[str, Any]) -> str:
    """A status's startup progress in words: "the teachers' predictions: 12,800 of 51,678 faces (25%)"."""
    done, total = startup["done"], startup["total"]
    return (f"{STARTUP_PHASES.get(startup['phase'], startup['phase'])}: {done:,} of {total:,} faces "
            f"({done / max(total, 1):.0%})")


def default_run_name(arch: str) -> str:
    """A new run's name when none is given: its start time and architecture."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{arch}"


@dataclass(frozen=True)
class Curves:
    """A run's learning curves as the Live tab draws them."""

    history: list[dict[str, Any]]  # the lineage's epoch records, numbered on across runs (RunDir.history)
    progress: list[dict[str, Any]]  # this run's progress records, numbered the same way


@dataclass
class RunDir:
    """Reading and writing one run directory."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    # ---- writing (the training process)
    def acquire(self) -> None:
        """Take the run's lock; refuse when another live process holds it. One process at a time reads, clears
        and takes it (two resumes started together, say, would otherwise both find a dead holder's lock stale)."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.file(LOCK)
        with _one_at_a_time(self.path):
            for _ in range(2):
                try:
                    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    holder, token = self._lock_holder()
                    if pid_alive(holder, token) and holder != os.getpid():
                        raise UserError(f"run {self.path} is already in use by process {holder}") from None
                    lock.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                with os.fdopen(fd, "w") as handle:
                    handle.write(f"{os.getpid()} {process_token(os.getpid())}")
                return
        raise UserError(f"cannot lock run directory {self.path}")

    def _lock_holder(self) -> tuple[int, str]:
        """The pid and process token in the lock file (0 and '' when unreadable)."""
        try:
            pid, _, token = self.file(LOCK).read_text().strip().partition(" ")
            return int(pid or 0), token
        except (OSError, ValueError):
            return 0, ""

    def release(self) -> None:
        if self._lock_holder()[0] == os.getpid():
            self.file(LOCK).unlink(missing_ok=True)

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.file(CONFIG), config)

    def log(self, record: dict[str, Any]) -> None:
        with open(self.file(METRICS), "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_log(self, after_epoch: int) -> None:
        """Keep only the log lines of completed epochs up to after_epoch (on resume)."""
        records = [r for r in self.metrics() if r.get("epoch", 0) <= after_epoch]
        atomic_write_jsonl(self.file(METRICS), records)

    def write_status(self, **fields: Any) -> None:
        status = self.status_raw()
        status.update(fields, updated=time.time())
        atomic_write_json(self.file(STATUS), status)

    def clear_stop(self) -> None:
        self.file(STOP).unlink(missing_ok=True)

    # ---- reading (pages, CLI)
    def config(self) -> dict[str, Any]:
        try:
            return read_json(self.file(CONFIG))
        except (OSError, ValueError):
            return {}

    def status_raw(self) -> dict[str, Any]:
        try:
            return read_json(self.file(STATUS))
        except (OSError, ValueError):
            return {}

    def status(self) -> dict[str, Any]:
        """status.json, with a dead process's 'running' turned into 'interrupted'."""
        status = self.status_raw()
        if status.get("state") in ACTIVE_STATES and not pid_alive(status.get("pid"), status.get("pid_token")):
            status["state"] = "interrupted"
            status["error"] = status.get("error") or "the training process ended without saying so (killed or crashed)"
        return status

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl records; a half-written last line is ignored."""
        try:
            lines = self.file(METRICS).read_text().splitlines()
        except OSError:
            return []
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def epochs(self) -> list[dict[str, Any]]:
        """The epoch records of metrics.jsonl, parsed once per change of the file: the pages list every run on each
        rerun, and a long run's log holds tens of thousands of progress lines."""
        path = self.file(METRICS)
        try:
            stat = path.stat()
        except OSError:
            return []
        stamp = (stat.st_size, stat.st_mtime_ns)
        if (kept := _EPOCHS.get(path)) is not None and kept[0] == stamp:
            return list(kept[1])
        epochs = [r for r in self.metrics() if r.get("type") == "epoch"]
        _EPOCHS.put(path, (stamp, epochs))
        return list(epochs)

    def lineage(self) -> list[RunDir]:
        """The runs that made this run's weights, oldest first and this one last: a warm-started run
        (--init OTHER_RUN/best.pt or last.pt) follows the run it started from, while that directory exists."""
        chain = [self]
        while source := chain[0].config().get("init_from"):
            parent = RunDir(Path(source).parent)
            if not parent.file(CONFIG).is_file() or any(parent.path.resolve() == r.path.resolve() for r in chain):
                break
            chain.insert(0, parent)
        return chain

    def history(self) -> list[dict[str, Any]]:
        """The epoch records of the whole lineage, numbered on across runs, each with its run's name.

        A run that a later one started from counts up to the checkpoint taken: its best epoch for best.pt."""
        return self._history(self.epochs())

    def _history(self, own_epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """history() with this run's own epoch records already read."""
        chain = self.lineage()
        records: list[dict[str, Any]] = []
        for run, successor in zip(chain, [*chain[1:], None]):
            epochs = run.epochs() if successor is not None else own_epochs
            if successor is not None and Path(successor.config()["init_from"]).name == BEST and epochs:
                best = max(range(len(epochs)), key=lambda i: (epochs[i].get("val_acc") or 0.0, -i))
                epochs = epochs[:best + 1]
            offset = records[-1]["epoch"] if records else 0
            records += [{"run": run.name, **e, "epoch": e["epoch"] + offset} for e in epochs]
        return records

    def curves(self) -> Curves:
        """What the live curves draw, from one read of this run's metrics.jsonl."""
        records = self.metrics()
        own = [r for r in records if r.get("type") == "epoch"]
        history = self._history(own)
        offset = (history[-1]["epoch"] - own[-1]["epoch"]) if own else (history[-1]["epoch"] if history else 0)
        progress = [{**r, "epoch": r["epoch"] + offset} for r in records if r.get("type") == "progress"]
        return Curves(history, progress)

    def threads(self) -> int:
        """The threads the training process runs on (0 = every core): its status's, which a resume may have
        changed, else its recipe's."""
        return int(self.status_raw().get("threads", self.config().get("threads", 1)))

    def reusable(self) -> bool:
        """Whether a new run may take this directory: it saved nothing to resume from (it failed or was
        interrupted while starting) and no live process holds it."""
        return not self.file(LAST).exists() and not self.is_active()

    def why_taken(self) -> str:
        """Why a new run may not take this directory (it is not reusable), and what to do instead."""
        status = self.status()
        if status.get("state") in ACTIVE_STATES:
            return f"{self.path} is being trained by process {status.get('pid')}"
        if status.get("state") == "finished":
            return f"{self.path} holds a finished run: choose another --run-dir"
        return f"{self.path} holds a run that can continue: use --resume {self.path} or another --run-dir"

    def request_stop(self) -> None:
        """Ask the training process to stop after its current step (it saves last.pt first)."""
        self.file(STOP).touch()

    def stop_requested(self) -> bool:
        return self.file(STOP).exists()

    def is_active(self) -> bool:
        return self.status().get("state") in ACTIVE_STATES

    def summary(self) -> dict[str, Any]:
        """One row of the run history table."""
        config, status, epochs = self.config(), self.status(), self.epochs()
        best = max((e.get("val_acc") or 0.0 for e in epochs), default=None)
        state = status.get("state", "unknown")
        done = status.get("epoch", len(epochs)) if state in ACTIVE_STATES else len(epochs)  # the one going, or done
        return {
            "name": self.name, "state": state, "data": config.get("data"),
            "arch": config.get("arch"), "epochs": f"{done}/{config.get('epochs', '?')}",
            "best_val_acc": best, "duration_s": sum(e.get("seconds", 0) for e in epochs),
            "started": status.get("started"), "path": str(self.path),
            "error": status.get("error") if state in ("failed", "interrupted") else None,
        }


@contextmanager
def _one_at_a_time(folder: Path) -> Iterator[None]:
    """Hold an exclusive flock on the folder itself (never deleted, unlike a lock file) while the block runs; the
    kernel lets it go if the process dies."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def list_runs(root: Path) -> list[RunDir]:
    """Run directories under root, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    started = []
    for path in root.iterdir():
        try:  # a run deleted meanwhile (another session, the CLI) is left out
            started.append(((path / CONFIG).stat().st_mtime, RunDir(path)))
        except OSError:
            continue
    return [run for _, run in sorted(started, key=lambda item: item[0], reverse=True)]


def delete_run(run: RunDir) -> None:
    if run.is_active():
        raise UserError(f"run {run.name} is still running: stop it first")
    shutil.rmtree(run.path)
