"""Data sets in the app: stored uploads, class samples, imbalance, what an epoch trains on, face grids and augmentation
previews."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fercore.app.launcher import LAUNCH_CONFIG, launching
from fercore.app.settings import data_dir
from fercore.atomic import atomic_write_bytes
from fercore.data.dataset import SYNTHETIC_TEST_FRACTION
from fercore.data.splits import carves_validation, epoch_steps
from fercore.errors import UserError
from fercore.paths import runs_dir, user_path
from fercore.runs import CONFIG, RunDir

if TYPE_CHECKING:
    from fercore.augment import AugmentConfig
    from fercore.data import FaceSet

DATA_UPLOAD_SUFFIXES = (".zip", ".csv")
MAX_DATA_UPLOAD_MB = 300  # fits the Kaggle archive.zip (about 60 MB) and fer2013.csv (about 290 MB)
IMBALANCE_RATIO = 3.0  # warn when the largest class has this many times the images of the smallest


def store_upload(name: str, content: bytes) -> Path:
    """Keep an uploaded archive.zip or fer2013.csv under the data folder, named by its content (stored once)."""
    suffix = Path(name).suffix.lower()
    if suffix not in DATA_UPLOAD_SUFFIXES:
        raise UserError(f"{name}: upload a .zip (Kaggle's archive.zip) or a .csv (fer2013.csv)")
    if len(content) > MAX_DATA_UPLOAD_MB * 1024**2:
        raise UserError(f"{name} is {len(content) / 1024**2:.0f} MB, over the limit of {MAX_DATA_UPLOAD_MB} MB")
    path = data_dir() / f"upload-{hashlib.sha256(content).hexdigest()[:20]}{suffix}"
    if not path.exists():
        atomic_write_bytes(path, content)
    return path


def stored_uploads() -> list[Path]:
    """The data sets uploaded so far (store_upload), newest first."""
    found = [p for p in data_dir().glob("upload-*") if p.suffix in DATA_UPLOAD_SUFFIXES and p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def delete_upload(path: Path) -> None:
    """Remove a stored upload; refused for anything else, and while a run trains on it."""
    if path not in stored_uploads():
        raise UserError(f"{path.name} is not a stored upload")
    busy = [run.name for run in _runs_reading(path) if run.is_active() or launching(run)]
    if busy:
        raise UserError(f"{path.name} is being trained on by {', '.join(busy)}: stop the run first")
    path.unlink(missing_ok=True)


def _runs_reading(path: Path) -> list[RunDir]:
    """The runs whose recipe (config.json, or the app's launch.json before it) reads the data file at path."""
    def reads(recipe: Path) -> bool:
        try:
            data = json.loads(recipe.read_text()).get("data")
            return isinstance(data, str) and user_path(data).resolve() == path.resolve()
        except (OSError, ValueError, AttributeError, UserError):
            return False
    root = runs_dir()
    folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return [RunDir(p) for p in folders if any(reads(p / name) for name in (CONFIG, LAUNCH_CONFIG))]


def class_samples(faces: FaceSet, per_class: int = 4, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Up to per_class random faces of each class, class by class, with their labels."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(faces.labels == i))[:per_class] for i in range(len(faces.classes))]
    order = np.concatenate(picked)
    return faces.images[order], [faces.classes[faces.labels[i]] for i in order]


def class_grid(faces: FaceSet, per_class: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """One image of up to per_class random faces of each class, a row per class (blank tiles fill the row of a class
    with fewer), and the classes of its rows."""
    images, labels = class_samples(faces, per_class, seed)
    shown = list(dict.fromkeys(labels))
    rows = []
    for name in shown:
        row = images[[label == name for label in labels]]
        rows += [row, np.full((per_class - len(row), *row.shape[1:]), 255, np.uint8)]
    return face_grid(np.concatenate(rows) if rows else images, per_class), shown


def imbalance_warning(counts: dict[str, int]) -> str | None:
    """A sentence for a class set whose largest class dwarfs its smallest, or None."""
    rarest, commonest = min(counts, key=counts.get), max(counts, key=counts.get)
    if counts[rarest] * IMBALANCE_RATIO > counts[commonest]:
        return None
    return (f"Imbalanced classes: {rarest} has {counts[rarest]:,} images, {commonest} {counts[commonest]:,} "
            f"({counts[commonest] / max(1, counts[rarest]):.0f}x). Class weights 'sqrt' or 'balanced' help the "
            "rare classes.")


def training_faces_note(splits: Collection[str], val_fraction: float, synthetic: bool) -> str:
    """Where a run's training faces come from, as FaceData.split takes them (splits: the data's splits present): the
    whole train split when the data has a validation split of its own, else the train split less the faces carved
    out of it to validate on."""
    pool = "train split" if "train" in splits else "faces"
    if not carves_validation(splits):
        return f"All of the data's {pool}: its own validation split validates the run, so none are held out."
    test = f" (the synthetic set keeps another {SYNTHETIC_TEST_FRACTION:.0%} as its test split)" if synthetic else ""
    return f"The data's {pool} less the {val_fraction:.0%} held out for validation{test}."


def epoch_note(faces: int, batch_size: int) -> str:
    """An epoch's steps in words: '7 steps of 64 faces (56 faces left out each epoch, drawn anew each time)'."""
    steps, batch = epoch_steps(faces, batch_size)
    note = f"{steps:,} step{'' if steps == 1 else 's'} of {batch:,} faces"
    left = faces - steps * batch
    if batch < batch_size:
        return f"{note} (a batch of {batch_size:,} is more than the {faces:,} training faces)"
    return f"{note} ({left:,} faces left out each epoch, drawn anew each time)" if left else note


def face_grid(faces: np.ndarray, columns: int, zoom: int = 2, gap: int = 2) -> np.ndarray:
    """Tile uint8 faces [N,H,W] into one image, columns wide, each face enlarged zoom times (nearest pixel)."""
    n, h, w = faces.shape
    rows = max(1, -(-n // columns))
    grid = np.full((rows * (h * zoom + gap) - gap, columns * (w * zoom + gap) - gap), 255, np.uint8)
    for i, face in enumerate(faces):
        r, c = divmod(i, columns)
        y, x = r * (h * zoom + gap), c * (w * zoom + gap)
        grid[y:y + h * zoom, x:x + w * zoom] = np.kron(face, np.ones((zoom, zoom), np.uint8))
    return grid


def face_tiles(faces: np.ndarray, indices: list[int]) -> list[np.ndarray]:
    """The faces at these places, each alone and enlarged (face_grid), for a gallery of captioned images."""
    return [face_grid(faces[i][None], 1) for i in indices]


def augmented(faces: np.ndarray, cfg: AugmentConfig, seed: int = 0) -> np.ndarray:
    """The faces [N,48,48] as training would see them under cfg, mixing included (a fixed seed: a change shows only
    its own effect)."""
    import random

    import torch

    from fercore.augment import augment_batch, mix_batch

    x = torch.from_numpy(faces).unsqueeze(1).float() / 255
    out, _ = mix_batch(augment_batch(x, cfg, torch.Generator().manual_seed(seed)), cfg, random.Random(seed))
    return (out.squeeze(1) * 255).round().to(torch.uint8).numpy()


def single_augmentation(field: str, value: float) -> AugmentConfig:
    """An augmentation recipe with one augmentation switched on, for its preview."""
    from fercore.augment import AugmentConfig

    return dataclasses.replace(AugmentConfig.off(), **{field: value})
