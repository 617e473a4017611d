from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, precision_recall_fscore_support

from fercore.metrics import Calibration, calibration, confusion_matrix, macro_f1, per_class_scores


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


def test_calibration_bins_faces_by_the_confidence_of_their_prediction() -> None:
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.55, 0.45]])
    fit = calibration(probabilities, np.array([0, 1, 1, 0]), bins=10)
    assert fit.counts.tolist() == [0, 0, 0, 0, 0, 2, 0, 1, 1, 0]
    assert fit.confidence[[5, 7, 8]] == pytest.approx([0.575, 0.8, 0.9])
    assert fit.accuracy[[5, 7, 8]].tolist() == [1, 0, 1]
    assert fit.error == pytest.approx((2 * 0.425 + 0.8 + 0.1) / 4)
    assert fit.mean_confidence == pytest.approx(0.7125) and fit.overall_accuracy == pytest.approx(0.75)
    assert fit.summary() == ("mean confidence 71.2% against accuracy 75.0%: underconfident by 3.7 points; "
                             "calibration error (ECE, 10 bins) 43.8 points")
    assert fit.to_json()["counts"] == fit.counts.tolist()
    back = Calibration.from_json(fit.to_json())
    assert back.summary() == fit.summary() and back.counts.tolist() == fit.counts.tolist()


@pytest.mark.parametrize("seed", range(3))
def test_a_model_right_as_often_as_it_says_has_almost_no_calibration_error(seed: int) -> None:
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1.0, 20_000)
    labels = (rng.uniform(size=confidence.size) >= confidence).astype(int)  # class 0 right with p = confidence
    fit = calibration(np.stack([confidence, 1 - confidence], 1), labels)
    assert fit.error < 0.02


def test_a_model_always_sure_and_always_wrong_is_overconfident_by_its_whole_confidence() -> None:
    wrong = calibration(np.stack([np.full(100, 0.99), np.full(100, 0.01)], 1), np.ones(100, int))
    assert wrong.summary() == ("mean confidence 99.0% against accuracy 0.0%: overconfident by 99.0 points; "
                               "calibration error (ECE, 10 bins) 99.0 points")
    empty = calibration(np.zeros((0, 3)), np.zeros(0, int))
    assert empty.error == 0.0 and empty.counts.sum() == 0
