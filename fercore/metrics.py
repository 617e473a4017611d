"""Classification metrics from a confusion matrix, as scikit-learn defines them (0 where a ratio is 0/0)."""
from __future__ import annotations

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
