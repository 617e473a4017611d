"""Loading a data source once (with a decode cache) and cutting it into named splits and class sets."""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fercore.atomic import atomic_write
from fercore.data.sources import READERS, LoadReport, RawFaces, source_kind, stat_fingerprint
from fercore.data.splits import carves_validation, stratified_holdout
from fercore.errors import UserError
from fercore.labels import EMOTIONS
from fercore.paths import user_path

CACHE_VERSION = 2  # bumped when reading rules change (2: a csv row with an unknown Usage is an error)
SPLITS = ("train", "val", "test", "all")
SYNTHETIC_PREFIX = "synthetic"
DEFAULT_SYNTHETIC_SIZE = 3500
SYNTHETIC_TEST_FRACTION = 0.2  # of the synthetic faces, kept as their test split
CACHE_LIMIT_BYTES = 1 << 30  # decoded sets kept, least recently used dropped first (FER2013: 67 MB)


@dataclass
class FaceSet:
    """One split in one class set: images [N,48,48] uint8 and labels indexing `classes`."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {c: int(n) for c, n in zip(self.classes, np.bincount(self.labels, minlength=len(self.classes)))}


@dataclass
class FaceData:
    """A whole decoded source, with its content fingerprint."""

    source: str
    raw: RawFaces
    fingerprint: str

    def splits_present(self) -> list[str]:
        return sorted(set(self.raw.splits.tolist()))

    def split(self, name: str, classes: tuple[str, ...] = EMOTIONS,
              val_fraction: float = 0.1, seed: int = 0, every_class: bool = True) -> FaceSet:
        """train / val / test / all; val is carved (stratified, seeded) from train when the source has none.
        every_class: each of classes must have faces (training needs them; evaluation can do without)."""
        if name not in SPLITS:
            raise UserError(f"unknown split {name!r}: choose from {', '.join(SPLITS)}")
        splits, emotions = self.raw.splits, self.raw.emotions
        present = set(splits.tolist())
        if name == "all":
            mask = np.ones(len(splits), dtype=bool)
        elif name == "test" or (name in ("train", "val") and not carves_validation(present)):
            mask = splits == name
            if name == "train" and "train" not in present:
                mask = splits == "all"
        else:
            pool = np.isin(splits, ["train", "all"])
            held = np.zeros(len(splits), dtype=bool)
            held[np.flatnonzero(pool)] = stratified_holdout(emotions[pool], val_fraction, seed)
            mask = held if name == "val" else pool & ~held
        if not mask.any():
            carve = "" if name != "test" else (
                ": --split all scores every face" if present == {"all"}  # a folder of one's own faces
                else ": --split val takes the faces carved from its train split")
            raise UserError(f"{self.source} has no {name} split (it has: {', '.join(self.splits_present())}){carve}")
        wanted = np.array([EMOTIONS.index(c) for c in classes])
        mask &= np.isin(emotions, wanted)
        missing = [c for c in classes if not np.any(emotions[mask] == EMOTIONS.index(c))]
        if missing and (every_class or len(missing) == len(classes)):
            hint = self.raw.report.summary()
            raise UserError(f"no {', '.join(missing)} images in the {name} split of {self.source}"
                            + (f" ({hint})" if hint else ""))
        remap = np.full(len(EMOTIONS), -1, dtype=np.int64)
        remap[wanted] = np.arange(len(wanted))
        return FaceSet(self.raw.images[mask], remap[emotions[mask]], tuple(classes))


def cache_dir() -> Path:
    return Path(os.environ.get("FERCORE_CACHE_DIR") or Path.home() / ".cache" / "fercore")


def _content_fingerprint(raw: RawFaces) -> str:
    digest = hashlib.sha256()
    for array in (raw.images, raw.emotions, raw.splits.astype("U5")):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _save_cache(path: Path, raw: RawFaces, fingerprint: str) -> None:
    def write(handle: io.BufferedWriter) -> None:
        np.savez(handle, images=raw.images, emotions=raw.emotions, splits=raw.splits.astype("U5"),
                 fingerprint=np.array(fingerprint), report=np.array(json.dumps(raw.report.__dict__)))
    atomic_write(path, write)


def _load_cache(path: Path) -> tuple[RawFaces, str] | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            report = LoadReport(**json.loads(str(npz["report"])))
            raw = RawFaces(npz["images"], npz["emotions"], npz["splits"], report)
            return raw, str(npz["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None  # a stale or damaged cache entry is simply rebuilt


def _synthetic_size(source: str) -> int:
    _, colon, count = source.partition(":")
    try:
        n = int(count) if colon else DEFAULT_SYNTHETIC_SIZE
    except ValueError:
        raise UserError(f"bad synthetic size in {source!r}: use synthetic or synthetic:N") from None
    if not 70 <= n <= 200_000:
        raise UserError("synthetic size must be between 70 and 200000")
    return n


def _synthetic(source: str) -> FaceData:
    from fercore.data.synthetic import generate_faces

    images, emotions = generate_faces(_synthetic_size(source), seed=0)
    test = stratified_holdout(emotions, SYNTHETIC_TEST_FRACTION, seed=1)
    raw = RawFaces(images, emotions, np.where(test, "test", "train"), LoadReport())
    return FaceData(source, raw, _content_fingerprint(raw))


def is_synthetic(source: str | Path) -> bool:
    return str(source).split(":", 1)[0] == SYNTHETIC_PREFIX


def check_source(source: str | Path) -> None:
    """The checks that need no decoding (a synthetic size, a path that exists and is a folder, zip or csv);
    UserError when one fails."""
    if is_synthetic(source):
        _synthetic_size(str(source))
    else:
        source_kind(user_path(source))


def load_data(source: str | Path, use_cache: bool = True) -> FaceData:
    """Decode a data source (folder, zip, csv, or 'synthetic[:N]'), reusing the decode cache when unchanged."""
    if is_synthetic(source):
        return _synthetic(str(source))
    path = user_path(source)
    kind = source_kind(path)
    key = hashlib.sha256(f"v{CACHE_VERSION}|{kind}|{stat_fingerprint(path)}".encode()).hexdigest()[:24]
    cached_path = cache_dir() / f"{key}.npz"
    if use_cache and cached_path.exists() and (hit := _load_cache(cached_path)):
        raw, fingerprint = hit
        try:
            os.utime(cached_path)  # recently used: pruned last
        except OSError:
            pass
        return FaceData(str(path), raw, fingerprint)
    raw = READERS[kind](path)
    fingerprint = _content_fingerprint(raw)
    if use_cache:
        try:
            _save_cache(cached_path, raw, fingerprint)
            _prune_cache(cached_path)
        except OSError:
            pass  # a read-only or full cache disk only costs speed
    return FaceData(str(path), raw, fingerprint)


def _prune_cache(keep: Path) -> None:
    """Delete the least recently used decoded sets until the cache fits in CACHE_LIMIT_BYTES (keep stays)."""
    entries = sorted((p for p in keep.parent.glob("*.npz") if p != keep), key=lambda p: p.stat().st_mtime)
    total = keep.stat().st_size + sum(p.stat().st_size for p in entries)
    for entry in entries:
        if total <= CACHE_LIMIT_BYTES:
            break
        total -= entry.stat().st_size
        entry.unlink(missing_ok=True)
