"""One temperature for a model's probabilities, so that its confidence can be taken at its word.

The probabilities the model gives (after its test-time augmentation's average) become p^(1/T), renormalised: T < 1
sharpens an underconfident model, T > 1 softens an overconfident one, and no face changes its label. `ship` fits T
by log-loss on the checkpoint's validation faces and reports the calibration it gives there cross-fitted (each
half of the faces scaled with the T fitted on the other half), as fitting and measuring on the same faces flatters.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fercore.metrics import Calibration

GRID = np.round(np.arange(0.25, 4.0 + 1e-9, 0.01), 2)  # temperatures tried: wide of any FER model measured (0.81)
TINY = 1e-12  # probabilities are clipped to this before the log-loss's logarithm


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
    """The temperature of GRID with the least log-loss on these faces (1.0 when there are none)."""
    if len(labels) == 0:
        return 1.0
    losses = [log_loss(sharpen(probabilities, float(t)), labels) for t in GRID]
    return float(GRID[int(np.argmin(losses))])


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
        scaled = Calibration.from_json(card["temperature"]["cross_fitted"])
        unscaled = Calibration.from_json(card["temperature"]["unscaled"])
        return (f"probabilities scaled by temperature {card['temperature']['value']:.2f} (fitted on these faces by "
                f"log-loss); calibration error {100 * unscaled.error:.1f} points unscaled, {100 * scaled.error:.1f} "
                f"scaled (2-fold cross-fitted); with TTA, scaled: mean confidence {scaled.mean_confidence:.1%} "
                f"against {scaled.overall_accuracy:.1%} right")
    if "calibration" in card["validation"]["tta"]:
        return f"{Calibration.from_json(card['validation']['tta']['calibration']).summary()} (with TTA)"
    return ""
