"""Stratified, seeded splits, and the batches an epoch cuts the training faces into."""
from __future__ import annotations

from collections.abc import Collection

import numpy as np


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask choosing round(fraction * n_c) items of every class c, the same for the same seed."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = int(round(fraction * len(members)))
        if 0 < fraction and take == 0 and len(members) > 1:
            take = 1
        mask[rng.permutation(members)[:take]] = True
    return mask


def epoch_steps(faces: int, batch_size: int) -> tuple[int, int]:
    """The steps of a training epoch over faces and their batch: full batches only (the faces left over sit out,
    drawn anew each epoch), one batch of all the faces when they are fewer than batch_size."""
    batch = min(batch_size, faces)
    return max(1, faces // batch), batch


def carves_validation(splits: Collection[str]) -> bool:
    """Whether a source with these splits has its validation faces carved from its train split: it has none of its
    own (a val folder, a csv's PublicTest rows)."""
    return "val" not in splits
