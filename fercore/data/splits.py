"""Stratified, seeded splits."""
from __future__ import annotations

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
