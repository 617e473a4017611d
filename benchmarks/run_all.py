"""The benchmark suite: one table of fercore's speed and memory against baselines timed in the same run.

    python benchmarks/run_all.py --data ../shared/data/fer2013/train [--quick] [--markdown OUT.md]

Sections: 1 one training epoch as a user waits (seeds-style baseline vs `python -m fercore train`), 2 inference
(faces, photos, the predict CLI), 3 webcam frames, 4 evaluation, 5 app start, 6 peak memory, 7 time to accuracy
of the shipped recipe (read from its run's metrics.jsonl, not trained here), 8 app-launched training vs the CLI
(images/s of the same run started from a shell alone and the app's way beside its server and a browser on the
Live tab, --threads cores-1 and every core; --quick trains on synthetic:20000). Every ratio is a median over the
median of its baseline row, measured in the same run. --quick trains on a 2,000-image subset and takes fewer
samples. Benchmarks are not tests: nothing here passes or fails.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import torch
from bench_app import app_rows
from bench_app_training import app_training_rows
from bench_inference import checkpoint_or_untrained, inference_rows
from bench_training import accuracy_rows, subset_folder, training_rows
from harness import ROOT, SECTIONS, Row, machine_lines, markdown_table

from fercore.hardware import usable_cores
from fercore.paths import SHIPPED_CHECKPOINT


@dataclass(frozen=True)
class Sizes:
    """How much each section measures."""

    train_images: int | None  # None: every image of --data
    repeats: int  # training epochs, processes, webcam passes, evaluations, app starts per variant
    photos: int  # photos (and batches of faces) timed
    frames: int  # webcam frames per pass
    eval_faces: int
    app_training_data: str | None  # section 8's data: None for --data (all of it), else a fercore data source
    app_training_window_s: float  # seconds of training measured per run in section 8
    app_training_rounds: int  # rounds of its four runs (--repeats overrides)


FULL = Sizes(train_images=None, repeats=3, photos=40, frames=150, eval_faces=7000, app_training_data=None,
             app_training_window_s=40, app_training_rounds=1)
QUICK = Sizes(train_images=2000, repeats=3, photos=12, frames=60, eval_faces=1000,
              app_training_data="synthetic:20000", app_training_window_s=20, app_training_rounds=1)
GROUPS = ("training", "inference", "app", "accuracy", "app-training")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True,
                        help="FER2013 train folder: one subfolder of JPEGs per emotion")
    parser.add_argument("--quick", action="store_true", help="a 2,000-image subset and fewer samples")
    parser.add_argument("--markdown", type=Path, metavar="OUT.md", help="also write the report as Markdown here")
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT,
                        help="model for sections 2-4 (default checkpoints/fer2013.pt; an untrained fernet if missing)")
    parser.add_argument("--run", type=Path, default=ROOT / "checkpoints",
                        help="run directory or metrics.jsonl of the shipped recipe, for section 7")
    parser.add_argument("--threads", type=int, default=0, help="torch and OpenCV threads (0 = every usable core)")
    parser.add_argument("--repeats", type=int, help="override the samples per variant")
    parser.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups of sections")
    return parser.parse_args()


def report(header: list[str], rows: list[Row], failures: list[str]) -> str:
    """The whole report as Markdown: the machine, the table, what failed."""
    lines = ["# fercore benchmarks", "", *(f"- {line}" for line in header), "",
             "Sections: " + "; ".join(f"{n} {title}" for n, title in SECTIONS.items()) + ".",
             "Ratio: this row's median / the median of the row named under *vs*.", "", markdown_table(rows)]
    if failures:
        lines += ["", "Failed:", *(f"- {failure}" for failure in failures)]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    data = args.data.resolve()
    if not data.is_dir():
        raise SystemExit(f"--data must be a folder of emotion folders (the baseline reads an ImageFolder): {data}")
    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or sizes.repeats
    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    command = shlex.join(["python", "benchmarks/run_all.py", *sys.argv[1:]])
    header = [f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `{command}`", *machine_lines(threads)]
    with tempfile.TemporaryDirectory(prefix="fercore-bench-") as tmp:
        work = Path(tmp)
        cache = work / "decode-cache"
        os.environ["FERCORE_CACHE_DIR"] = str(cache)  # private: the training section's cold run empties it
        full_data = data
        if sizes.train_images:
            data = subset_folder(data, sizes.train_images, work / "subset")
        images = sum(1 for _ in data.glob("*/*"))
        checkpoint, model = checkpoint_or_untrained(args.checkpoint, work)
        subset = " (a seeded subset of --data)" if sizes.train_images else ""
        header += [f"data: {images:,} images{subset}; {repeats} sample(s) per variant",
                   f"model for sections 2-4: {model}"]
        app_training_data = sizes.app_training_data or str(full_data)
        app_training_rounds = args.repeats or sizes.app_training_rounds
        if not args.only or "app-training" in args.only:
            header.append(f"section 8: {app_training_data}, {sizes.app_training_window_s:.0f} s measured per run, "
                          f"{app_training_rounds} round(s) of its four runs")
        groups: dict[str, Callable[[], list[Row]]] = {
            "training": lambda: training_rows(data, threads, repeats, cache),
            "inference": lambda: inference_rows(data, checkpoint, work, sizes.photos, sizes.frames,
                                                sizes.eval_faces, repeats),
            "app": lambda: app_rows(work, repeats),
            "accuracy": lambda: accuracy_rows(args.run),
            "app-training": lambda: app_training_rows(app_training_data, sizes.app_training_window_s,
                                                      app_training_rounds, work),
        }
        rows: list[Row] = []
        failures: list[str] = []
        start = time.perf_counter()
        for name, measure in groups.items():
            if args.only and name not in args.only:
                continue
            print(f"[{time.perf_counter() - start:6.0f} s] {name} ...", file=sys.stderr, flush=True)
            try:
                rows += measure()
            except Exception as exc:  # noqa: BLE001  (one broken section must not lose the others' numbers)
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
    text = report(header, rows, failures)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
