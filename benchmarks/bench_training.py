"""Training: one epoch as a user waits for it (whole child process), the seeds-style baseline against fercore's own
pipeline; the peak memory of those processes; and the time the shipped recipe took to reach an accuracy.
"""
from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from harness import ROOT, Row, run_timed

from fercore.hardware import amp_dtype

BASELINE = "seeds baseline, DataLoader workers 0"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass
class Epoch:
    """One measured training process."""

    wall_s: float
    max_rss_mb: float
    train_images: int
    loop_images_per_s: float  # as the process itself measured its training loop


def subset_folder(source: Path, count: int, dest: Path, seed: int = 0) -> Path:
    """dest/train/<class>/ holding symlinks to a seeded pick of about `count` images, every class in proportion."""
    classes = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
               for d in sorted(source.iterdir()) if d.is_dir()}
    total = sum(len(files) for files in classes.values())
    root = dest / "train"  # named train, so that fercore reads it as a train split and carves val out of it
    rng = random.Random(seed)
    for name, files in classes.items():
        (root / name).mkdir(parents=True)
        take = min(len(files), max(30, round(count * len(files) / total)))  # >= 3 per class in a 10% val
        for path in rng.sample(files, take):
            (root / name / path.name).symlink_to(path.resolve())
    return root


def run_baseline(data: Path, workers: int, threads: int) -> Epoch:
    script = Path(__file__).with_name("seeds_baseline.py")
    done = run_timed([sys.executable, str(script), "--data", str(data), "--workers", str(workers),
                      "--threads", str(threads)])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Epoch(done.seconds, done.max_rss_mb, result["train_images"],
                 result["train_images"] / result["loop_seconds"])


def run_fercore(data: Path, cache: Path, threads: int, cold: bool, amp: str = "auto") -> Epoch:
    """`python -m fercore train` for one epoch of `basic`, batch 64, AdamW, in a fresh run directory.

    cold empties the decode cache directory first; a warm run reuses what the cold run before it left there.
    """
    if cold:
        shutil.rmtree(cache, ignore_errors=True)
    elif not cache.is_dir() or not any(cache.iterdir()):
        raise RuntimeError(f"no decode cache in {cache} for a warm run: run the cold one first")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fercore-run-") as tmp:
        run_dir = Path(tmp) / "run"
        done = run_timed([sys.executable, "-m", "fercore", "train", "--data", str(data), "--arch", "basic",
                          "--epochs", "1", "--batch-size", "64", "--optimizer", "adamw", "--threads", str(threads),
                          "--amp", amp, "--run-dir", str(run_dir)], env={"FERCORE_CACHE_DIR": str(cache)})
        record = next(r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                      if r["type"] == "epoch")
    return Epoch(done.seconds, done.max_rss_mb, round(record["images_per_s"] * record["seconds"]),
                 record["images_per_s"])


def _variants(data: Path, threads: int, cache: Path) -> dict[str, Callable[[], Epoch]]:
    """Name -> one measurement; run in this order in every round (the cold run fills the warm runs' cache)."""
    auto = "bf16 autocast" if amp_dtype(torch.device("cpu")) else "float32"  # what --amp auto picks on this CPU
    return {
        BASELINE: lambda: run_baseline(data, 0, threads),
        "seeds baseline, DataLoader workers 2": lambda: run_baseline(data, 2, threads),
        f"fercore train, cold decode cache, {auto}": lambda: run_fercore(data, cache, threads, cold=True),
        f"fercore train, warm decode cache, {auto}": lambda: run_fercore(data, cache, threads, cold=False),
        "fercore train, warm decode cache, float32 (--amp off)":
            lambda: run_fercore(data, cache, threads, cold=False, amp="off"),
    }


def training_rows(data: Path, threads: int, repeats: int, work: Path) -> list[Row]:
    """Section 1 (wall seconds of one epoch) and section 6 (peak memory of those processes)."""
    epochs: dict[str, list[Epoch]] = {}
    cache = work / "decode-cache"
    for _ in range(repeats):  # rounds, so that a busy spell of the machine slows every variant alike
        for name, measure in _variants(data, threads, cache).items():
            epochs.setdefault(name, []).append(measure())
    rows = []
    for name, runs in epochs.items():
        images = runs[0].train_images
        waited = statistics.median(images / e.wall_s for e in runs)
        loop = statistics.median(e.loop_images_per_s for e in runs)
        rows.append(Row(1, name, [e.wall_s for e in runs], "s", BASELINE,
                        f"{images:,} train images: {waited:.0f} img/s as waited, {loop:.0f} img/s in the loop"))
        rows.append(Row(6, f"{name}: peak RSS", [e.max_rss_mb for e in runs], "MiB", f"{BASELINE}: peak RSS"))
    rows.append(floor_row(epochs[BASELINE][0].train_images, threads, repeats))
    return rows


def floor_row(images: int, threads: int, repeats: int) -> Row:
    """Section 1: the floor under any pipeline for this epoch: importing fercore's training module plus the
    training steps alone (bf16 where the CPU has it, random in-memory faces: no decoding, validation or saving)."""
    from fercore.config import TrainConfig
    from fercore.train import measure_step_seconds

    cfg = TrainConfig(data="synthetic", arch="basic", batch_size=64, optimizer="adamw", threads=threads)
    imports = [run_timed([sys.executable, "-c", "import fercore.train"]).seconds for _ in range(repeats)]
    steps = [measure_step_seconds(cfg, 7, threads, repeats=20) for _ in range(repeats)]
    floor = [i + images / cfg.batch_size * s for i, s in zip(imports, steps)]
    return Row(1, "floor: import + training steps alone (no data, validation or saving)", floor, "s", BASELINE,
               f"{cfg.batch_size / statistics.median(steps):.0f} img/s in the steps; no pipeline with this network, "
               "batch and precision can wait less on this machine")


def metrics_file(run: Path) -> Path:
    """A run directory's metrics.jsonl (or the file itself); checkpoints/metrics.jsonl when the run has none."""
    candidate = run / "metrics.jsonl" if run.is_dir() else run
    return candidate if candidate.is_file() else ROOT / "checkpoints" / "metrics.jsonl"


def accuracy_rows(run: Path, thresholds: tuple[float, ...] = (0.60, 0.65)) -> list[Row]:
    """Section 7: cumulative epoch seconds until val_acc first reaches each threshold, read from the run's log."""
    path = metrics_file(run)
    epochs = [r for r in map(json.loads, path.read_text().splitlines()) if r.get("type") == "epoch"]
    config = path.with_name("config.json")
    recipe = json.loads(config.read_text()) if config.is_file() else {}
    where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    if recipe:
        where += f" ({recipe.get('arch')}, batch {recipe.get('batch_size')}, --threads {recipe.get('threads')})"
    rows = []
    for threshold in thresholds:
        elapsed, reached = 0.0, None
        for record in epochs:
            elapsed += record["seconds"]
            if record["val_acc"] >= threshold:
                reached = record
                break
        name = f"shipped recipe to val acc {threshold:.0%}"
        if reached:
            rows.append(Row(7, name, [elapsed / 60], "min", None, f"epoch {reached['epoch']}; {where}"))
        else:
            best = max((r["val_acc"] for r in epochs), default=0.0)
            rows.append(Row(7, name, [], "min", None,
                            f"not reached in {len(epochs)} epoch(s), best {best:.3f}; {where}"))
    return rows
