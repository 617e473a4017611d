"""Where a model looks: occlusion maps, how much hiding each part of a face changes the probability of a class.

Occlusion needs only forward passes, so it explains every model as it runs (int8 included, with its test-time
augmentation): the face is copied once per position of a square patch of the data set's mean grey, and all copies
go through the model in one batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fercore.atomic import atomic_write_bytes
from fercore.checkpoint import LoadedModel
from fercore.data.images import FACE_SIZE
from fercore.errors import UserError
from fercore.paths import output_path
from fercore.predict import ImagePrediction

PATCH = 12  # pixels hidden at a time, a quarter of the face's side: an eye and its brow, half the mouth (8 left
# most FER2013 faces' labels standing: a smile survives losing any one corner)
STRIDE = 4  # 10 x 10 = 100 positions; each pixel is hidden by 1 to 9 of them
SMOOTHING = 2.0  # sigma in face pixels of the blur drawn maps get
FAINT = 0.05  # the colour scale's least span (probability): a map of small changes stays pale, not stretched


@dataclass
class OcclusionMap:
    """A face, the class explained, how much hiding each square changed that class's probability, and per pixel
    the mean of those changes over the squares that hid it (for drawing)."""

    face: np.ndarray  # uint8 [48,48]
    target: str
    probability: float  # the class's probability for the whole face
    drop: np.ndarray  # float32 [48,48]: per pixel, the mean fall when a square hid it (negative: a rise)
    square_drops: np.ndarray  # float32 [squares]: each square's fall, hidden alone

    def strongest(self) -> float:
        """The largest fall one square caused, in probability (0 when hiding any one only raises it)."""
        return max(0.0, float(self.square_drops.max()))

    def describe(self) -> str:
        """What the drawing shows, in one line (for captions)."""
        fall, rise = self.strongest(), max(0.0, -float(self.square_drops.min()))
        if max(fall, rise) < FAINT:
            return (f"no one part decides it: hiding any one square changes {self.target} by "
                    f"{100 * max(fall, rise):.1f} points at most")
        if fall < FAINT:
            return (f"nothing here holds up {self.target}: hiding a blue part raises it (by up to {100 * rise:.0f} "
                    "points)")
        return (f"hiding a red part lowers {self.target} (by up to {100 * fall:.0f} points), hiding a blue part "
                "raises it")


def _patch_origins(patch: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the patches, the last row and column flush with the face's edge."""
    starts = list(range(0, FACE_SIZE - patch + 1, stride))
    if starts[-1] != FACE_SIZE - patch:
        starts.append(FACE_SIZE - patch)
    return [(y, x) for y in starts for x in starts]


def occlusion_maps(loaded: LoadedModel, face: np.ndarray, targets: list[int] | None = None,
                   tta: bool | None = None, patch: int = PATCH, stride: int = STRIDE) -> list[OcclusionMap]:
    """Occlusion maps of one uint8 face [48,48] for each target class index (default: the class the model
    predicts), all from one batch through the model (with its own test-time augmentation unless told)."""
    if not 1 <= patch <= FACE_SIZE or stride < 1:
        raise ValueError(f"patch must be 1-{FACE_SIZE} pixels and stride at least 1")
    face = np.asarray(face, dtype=np.uint8).reshape(FACE_SIZE, FACE_SIZE)
    origins = _patch_origins(patch, stride)
    copies = np.repeat(face[None], len(origins) + 1, axis=0)  # copy 0 unhidden
    cover = np.zeros((FACE_SIZE, FACE_SIZE), np.float32)
    for k, (y, x) in enumerate(origins, 1):
        copies[k, y:y + patch, x:x + patch] = round(loaded.mean * 255)
        cover[y:y + patch, x:x + patch] += 1
    probs = loaded.proba(copies, tta)
    maps = []
    for t in [int(probs[0].argmax())] if targets is None else targets:
        square_drops = (probs[0, t] - probs[1:, t]).astype(np.float32)
        drop = np.zeros((FACE_SIZE, FACE_SIZE), np.float32)
        for (y, x), fall in zip(origins, square_drops):
            drop[y:y + patch, x:x + patch] += fall
        maps.append(OcclusionMap(face, loaded.classes[t], float(probs[0, t]), drop / cover, square_drops))
    return maps


def explain_faces(loaded: LoadedModel, faces: Sequence[np.ndarray], labels: Sequence[Sequence[str]],
                  tta: bool | None = None) -> list[list[tuple[OcclusionMap, np.ndarray]]]:
    """For each face, its occlusion map for each class named for it, with the map's drawing (overlay)."""
    return [[(m, overlay(m)) for m in occlusion_maps(loaded, face, [loaded.classes.index(c) for c in names], tta)]
            for face, names in zip(faces, labels)]


def overlay(occlusion: OcclusionMap, side: int = 192) -> np.ndarray:
    """The face in grey at side x side pixels (RGB uint8), red where hiding lowers the class's probability and
    blue where it raises it, the more the stronger; scaled to the map's largest change, or to FAINT if that is
    smaller."""
    import cv2

    gray = cv2.resize(occlusion.face, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    smooth = cv2.GaussianBlur(occlusion.drop, (0, 0), SMOOTHING)  # the patches' 4-pixel steps, softened
    drop = cv2.resize(smooth, (side, side), interpolation=cv2.INTER_CUBIC)
    strength = np.clip(np.abs(drop) / max(float(np.abs(smooth).max()), FAINT), 0, 1)[..., None] * 0.7
    tint = np.where(drop[..., None] > 0, np.float32([230, 30, 30]), np.float32([40, 90, 230]))
    rgb = gray[..., None] * (1 - strength) + tint * strength
    return np.clip(rgb.round(), 0, 255).astype(np.uint8)


def maps_folder(path: str | Path) -> Path:
    """The folder save_maps may write into (~ expanded); UserError, before any work, when it cannot be one."""
    folder = output_path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{path} is a file, not a folder for the maps")
    return folder


def save_maps(loaded: LoadedModel, predictions: list[ImagePrediction], folder: Path) -> list[list[Path]]:
    """Draw each predicted face's occlusion map for its label into folder as <image>-face<N>-<label>.png (an image
    whose name another shares gets -<its position> after its name); the paths, per image and face."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for prediction, stem in zip(predictions, _distinct_stems([p.image for p in predictions])):
        drawn = explain_faces(loaded, [f.crop for f in prediction.faces], [[f.label] for f in prediction.faces])
        paths = []
        for number, (face, ((_, drawing),)) in enumerate(zip(prediction.faces, drawn), 1):
            path = folder / f"{stem}-face{number}-{face.label}.png"
            atomic_write_bytes(path, cv2.imencode(".png", drawing[..., ::-1])[1].tobytes())
            paths.append(path)
        saved.append(paths)
    return saved


def _distinct_stems(names: list[str]) -> list[str]:
    """The names' stems, each shared one followed by -<its position from 1>, none equal to another."""
    stems = [Path(name).stem for name in names]
    alone = {stem for stem in stems if stems.count(stem) == 1}
    out: list[str] = []
    for number, stem in enumerate(stems, 1):
        name = stem if stem in alone else f"{stem}-{number}"
        while name in out or (name != stem and name in alone):
            name = f"{name}-{number}"
        out.append(name)
    return out
