from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, precision_recall_fscore_support

from fercore.metrics import confusion_matrix, macro_f1, per_class_scores


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 200)  # class 5 never present
    predicted = rng.integers(0, 4, 200)  # class 4 never predicted
    classes = range(6)
    confusion = confusion_matrix(labels, predicted, 6)
    np.testing.assert_array_equal(confusion, sk_confusion(labels, predicted, labels=classes))
    expected = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    got = per_class_scores(confusion)
    for name, column in zip(("precision", "recall", "f1", "support"), expected):
        np.testing.assert_allclose(got[name], column, err_msg=name)
    assert macro_f1(confusion) == pytest.approx(f1_score(labels, predicted, average="macro", zero_division=0))
