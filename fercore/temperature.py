"""A temperature for a model's probabilities, so that its confidence can be taken at its word.

The probabilities the model gives (after its test-time augmentation's average) become p^(1/T), renormalised: T < 1
sharpens an underconfident model, T > 1 softens an overconfident one, and no face changes its label. Averaging the
TTA views softens what one view says, so a model has one T for its TTA and one for a single view (the webcam, an
export). `ship` fits each by log-loss on the checkpoint's validation faces and reports the calibration it gives
there cross-fitted (each half of the faces scaled with the T fitted on the other half), as fitting and measuring on
the same faces flatters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fercore.metrics import Calibration

BOUNDS = (0.05, 20.0)  # temperatures searched: far wide of any FER model measured (0.81-0.86)
TINY = 1e-12  # probabilities are clipped to this before the log-loss's logarithm
GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class Temperatures:
    """A model's temperature for its TTA's averaged probabilities and for a single view's."""

    tta: float = 1.0
    one_view: float = 1.0

    def for_views(self, tta: bool) -> float:
        """The temperature for probabilities from the TTA views (tta) or from one view."""
        return self.tta if tta else self.one_view

    def to_json(self) -> dict[str, float]:
        return {"tta": self.tta, "one_view": self.one_view}


def sharpen(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities [N,C] scaled by one temperature (p^(1/T), each row renormalised), in float64; itself when T
    is 1. In float32 two top probabilities a step apart could round to a tie and swap the label."""
    if temperature == 1.0:
        return probabilities
    logs = np.log(np.clip(np.asarray(probabilities, np.float64), np.finfo(np.float64).tiny, 1.0)) / temperature
    scaled = np.exp(logs - logs.max(axis=1, keepdims=True))
    return scaled / scaled.sum(axis=1, keepdims=True)


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true classes."""
    return float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], TINY, 1.0)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature within BOUNDS with the least log-loss on these faces, to 0.01 (1.0 when there are none).

    The log-loss of p^(1/T) is convex in 1/T, so a golden-section search over log T finds its one minimum."""
    if len(labels) == 0:
        return 1.0
    def loss(log_t: float) -> float:
        return log_loss(sharpen(probabilities, math.exp(log_t)), labels)
    low, high = math.log(BOUNDS[0]), math.log(BOUNDS[1])
    while high - low > 1e-4:  # 0.01% of T: well inside the rounding to 0.01
        left, right = high - GOLDEN * (high - low), low + GOLDEN * (high - low)
        low, high = (low, right) if loss(left) < loss(right) else (left, high)
    return round(math.exp((low + high) / 2), 2)


def cross_fitted(probabilities: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The probabilities with each of two random halves of the faces scaled by the temperature fitted on the
    other half: an honest view of what fitting a temperature does on faces it was not fitted on."""
    order = np.random.default_rng(seed).permutation(len(labels))
    halves = (order[:len(order) // 2], order[len(order) // 2:])
    out = probabilities.copy()
    for fit_on, apply_to in (halves, halves[::-1]):
        out[apply_to] = sharpen(probabilities[apply_to], fit_temperature(probabilities[fit_on], labels[fit_on]))
    return out


def confidence_text(card: dict[str, Any]) -> str:
    """How far the model's confidence can be trusted, from its card ('' on cards shipped before it was measured)."""
    if "temperature" in card:
        fit = card["temperature"]
        scaled, unscaled = Calibration.from_json(fit["cross_fitted"]), Calibration.from_json(fit["unscaled"])
        text = (f"probabilities scaled by temperature {fit['value']:.2f} (fitted on these faces by log-loss); "
                f"calibration error {100 * unscaled.error:.1f} points unscaled, {100 * scaled.error:.1f} scaled "
                f"(2-fold cross-fitted); with TTA, scaled: mean confidence {scaled.mean_confidence:.1%} against "
                f"{scaled.overall_accuracy:.1%} right")
        if "one_view" in fit:  # cards since temperatures were fitted per view
            one = fit["one_view"]
            text += (f"; one view (webcam, export): temperature {one['value']:.2f}, calibration error "
                     f"{100 * Calibration.from_json(one['unscaled']).error:.1f} points unscaled, "
                     f"{100 * Calibration.from_json(one['cross_fitted']).error:.1f} scaled")
        return text
    if "calibration" in card["validation"]["tta"]:
        return f"{Calibration.from_json(card['validation']['tta']['calibration']).summary()} (with TTA)"
    return ""
