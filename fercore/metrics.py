"""Classification metrics from a confusion matrix, as scikit-learn defines them (0 where a ratio is 0/0), and
confidence calibration."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [C, C]: rows = true class, columns = predicted class."""
    flat = np.asarray(labels, np.int64) * num_classes + np.asarray(predicted, np.int64)
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class."""
    tp = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    return {"precision": _ratio(tp, predicted), "recall": _ratio(tp, support),
            "f1": _ratio(2 * tp, support + predicted), "support": support}


def macro_f1(confusion: np.ndarray) -> float:
    """The unweighted mean of the F1 of the classes that are present or predicted (scikit-learn's default: a
    class with no faces that is never predicted has no F1, as when evaluating on a set without it)."""
    scores = per_class_scores(confusion)
    seen = (scores["support"] + confusion.sum(0)) > 0
    return float(scores["f1"][seen].mean()) if seen.any() else 0.0


@dataclass
class Calibration:
    """How far a model's confidence can be trusted: its faces binned by the probability of the class it predicts,
    each bin's mean confidence beside how often it was right (a calibrated model's are equal)."""

    edges: np.ndarray  # [B+1] bin edges over 0..1
    counts: np.ndarray  # [B] faces per bin
    confidence: np.ndarray  # [B] mean confidence in each bin (0 where empty)
    accuracy: np.ndarray  # [B] share right in each bin (0 where empty)

    @property
    def error(self) -> float:
        """Expected calibration error: the face-weighted mean gap between confidence and accuracy."""
        total = self.counts.sum()
        return float((self.counts * np.abs(self.accuracy - self.confidence)).sum() / total) if total else 0.0

    @property
    def mean_confidence(self) -> float:
        total = self.counts.sum()
        return float((self.counts * self.confidence).sum() / total) if total else 0.0

    @property
    def overall_accuracy(self) -> float:
        total = self.counts.sum()
        return float((self.counts * self.accuracy).sum() / total) if total else 0.0

    def summary(self) -> str:
        """One line: mean confidence against accuracy, and the calibration error, in points."""
        gap = 100 * (self.mean_confidence - self.overall_accuracy)
        leaning = (f"overconfident by {gap:.1f} points" if gap >= 0.05 else
                   f"underconfident by {-gap:.1f} points" if gap <= -0.05 else "as confident as it is right")
        return (f"mean confidence {self.mean_confidence:.1%} against accuracy {self.overall_accuracy:.1%}: {leaning}; "
                f"calibration error (ECE, {len(self.counts)} bins) {100 * self.error:.1f} points")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        """Back from to_json (a model card keeps it)."""
        return cls(*(np.asarray(data[k], dtype) for k, dtype in (("edges", np.float64), ("counts", np.int64),
                                                                  ("confidence", np.float64),
                                                                  ("accuracy", np.float64))))

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error, "mean_confidence": self.mean_confidence, "edges": self.edges.tolist(),
                "counts": self.counts.tolist(), "confidence": self.confidence.tolist(),
                "accuracy": self.accuracy.tolist()}


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> Calibration:
    """Calibration of predictions [N,C] against true labels [N] in equal-width confidence bins."""
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(1) if len(probabilities) else np.zeros(0)
    correct = (probabilities.argmax(1) == np.asarray(labels)) if len(probabilities) else np.zeros(0, bool)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)  # (lo, hi]; 0 in the first
    counts = np.bincount(which, minlength=bins)
    return Calibration(edges, counts, _ratio(np.bincount(which, confidence, bins), counts),
                       _ratio(np.bincount(which, correct.astype(np.float64), bins), counts))
