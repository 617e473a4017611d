"""Which faces a model has learned: 64-bit digests of its training faces, kept in its checkpoint, so that a run
or an evaluation can tell when its validation or test faces are among them, whatever the file, carve or copy they
came from (faces re-encoded, say as JPEG, have other pixels and are not recognised). A run started from another
model (--init) keeps that model's digests as well. FER2013 itself repeats faces: 7.3% of the default validation
carve of its train split are, pixel for pixel, also training faces."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fercore.errors import UserError

DIGESTS = "train_face_digests"  # checkpoint key: the sorted, unique digests of the faces the model trained on
TOLERANCE = 0.005  # the share of a run's validation faces a model it learns from may have learned (0.5 points)


def digests(images: np.ndarray) -> np.ndarray:
    """One int64 digest (BLAKE2b, 8 bytes) per uint8 face [N,H,W]: equal pixels, equal digest."""
    if images.dtype != np.uint8:
        raise TypeError(f"faces are digested as uint8 pixels, not {images.dtype}")
    rows = np.ascontiguousarray(images).reshape(len(images), int(np.prod(images.shape[1:])))
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little", signed=True)
                     for row in rows], dtype=np.int64)


def repeats_note(images: np.ndarray, labels: np.ndarray) -> str:
    """A sentence on the faces of a data set that copy another pixel for pixel, and on blank ones ('' if none)."""
    _, group, sizes = np.unique(digests(images), return_inverse=True, return_counts=True)
    copies = len(images) - len(sizes)
    labelled = np.unique(np.stack([group, labels]), axis=1)[0]  # one entry per (group, label) pair
    mixed = int((np.bincount(labelled, minlength=len(sizes)) > 1).sum())
    blank = int((images.min(axis=(1, 2)) == images.max(axis=(1, 2))).sum())
    parts = [f"{copies:,} of {len(images):,} faces copy another pixel for pixel"
             + (f" ({mixed:,} group(s) of copies carry different labels)" if mixed else "")] if copies else []
    parts += [f"{blank:,} face(s) are blank (one grey level)"] if blank else []
    return "; ".join(parts)


def stored_form(train_digests: np.ndarray) -> torch.Tensor:
    """What a checkpoint keeps under DIGESTS: sorted and unique (8 bytes a face, 199 KB for FER2013's train)."""
    return torch.from_numpy(np.unique(train_digests))


def well_formed(kept: object) -> bool:
    """Whether a checkpoint's DIGESTS value is what stored_form makes (checked when a checkpoint is read)."""
    return isinstance(kept, torch.Tensor) and kept.dtype == torch.int64 and kept.dim() == 1


def learned_digests(checkpoint: Mapping[str, Any]) -> np.ndarray | None:
    """The digests a checkpoint keeps, or None for checkpoints saved before they were."""
    kept = checkpoint.get(DIGESTS)
    return kept.numpy() if isinstance(kept, torch.Tensor) else None


class Holdout:
    """A run's validation faces, to check the models it starts from or learns from against.

    Only the validation faces the run's own training faces do not repeat can leak: a model that learned the
    others knows nothing about them the run will not learn itself."""

    def __init__(self, val_images: np.ndarray, train_digests: np.ndarray, fingerprint: str,
                 val_split: dict[str, Any], carved: bool):
        """carved: the validation faces are cut from train by val_split (not a split of the data's own)."""
        val = digests(val_images)
        self.val_count = len(val)
        self.leakable = val[~np.isin(val, train_digests)]  # the validation faces its training set lacks
        self.fingerprint, self.val_split, self.carved = fingerprint, val_split, carved
        self.inherited: list[np.ndarray] = []  # the digests of the models that passed: the run learns from them

    def check(self, what: str, card: Mapping[str, Any], learned: np.ndarray | None, strict: bool) -> None:
        """Raise UserError if the model called `what` learned this run's validation faces; otherwise what it
        learned (when known) joins `inherited`.

        With its digests the check is exact. Checkpoints without them are judged by their data fingerprint and
        carve: the same data carved otherwise is refused; strict also refuses other data, which may hold
        these faces under another format."""
        same_fingerprint = card.get("data_fingerprint") == self.fingerprint
        carve = card.get("val_split") or {}
        recarved = same_fingerprint and carve != self.val_split and self.carved
        hint = (f"; train with its carve (--val-fraction {carve.get('fraction')}, and split_seed {carve.get('seed')} "
                "in --config)" if recarved else "")
        if learned is not None:
            leaked = int(np.isin(self.leakable, learned).sum())
            if leaked > TOLERANCE * self.val_count:
                raise UserError(f"{what} learned {leaked:,} of this run's {self.val_count:,} validation faces: their "
                                "accuracy would then mean nothing" + (hint or "; use a model that never saw them"))
            self.inherited.append(learned)
            return
        if recarved:
            raise UserError(f"{what} learned these faces with another validation carve: it has seen this run's "
                            f"validation faces, whose accuracy would then mean nothing{hint}")
        if strict and not same_fingerprint:
            raise UserError(f"{what} was not trained on this data with this validation split: its predictions "
                            "could carry the validation labels into training")
