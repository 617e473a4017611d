"""Comparing two models on the same faces: gained and lost faces, McNemar's test, the interval, and the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fercore.checkpoint import read_checkpoint, save_checkpoint
from fercore.cli import main
from fercore.compare import compare, compare_reports, mcnemar_p, p_text
from fercore.data import FaceSet
from fercore.errors import UserError
from fercore.evaluate import EvalReport, evaluate

CLASSES = ("angry", "happy", "sad")


def report(labels: np.ndarray, predicted: np.ndarray, images: np.ndarray | None = None,
           classes: tuple[str, ...] = CLASSES) -> EvalReport:
    probabilities = np.full((len(labels), len(classes)), 0.1)
    probabilities[np.arange(len(labels)), predicted] = 0.8
    images = np.zeros((len(labels), 48, 48), np.uint8) if images is None else images
    return EvalReport(classes, labels, probabilities, FaceSet(images, labels, classes), tta=True)


def exact_p(gained: int, lost: int) -> float:
    """The two-sided binomial tail in integer arithmetic, written apart from the module's log-gamma sum."""
    n = gained + lost
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2**n) if n else 1.0


@pytest.mark.parametrize("gained, lost", [(10, 0), (0, 10), (5, 5), (94, 84), (30, 12), (0, 0), (700, 640)])
def test_mcnemar_matches_the_binomial_tail(gained: int, lost: int) -> None:
    assert mcnemar_p(gained, lost) == pytest.approx(exact_p(gained, lost), rel=1e-9)


def test_mcnemar_by_hand_and_when_it_underflows() -> None:
    assert mcnemar_p(10, 0) == pytest.approx(2 / 1024)  # ten coins, all heads, or all tails
    assert mcnemar_p(94, 84) == pytest.approx(0.4997, abs=0.002)  # the normal approximation, continuity-corrected
    assert mcnemar_p(5000, 0) == 0.0 and p_text(0.0) == "< 1e-300" and p_text(0.0123456) == "0.0123"


def test_a_comparison_counts_the_faces_each_model_gets_right() -> None:
    labels = np.repeat([0, 1, 2], 40)
    first, second = labels.copy(), labels.copy()
    first[:30] = 1  # the first misses 30 angry faces ...
    second[:12] = 2  # ... the second only 12 of them (18 gained) ...
    second[40:46] = 0  # ... but misses 6 happy ones the first gets right (6 lost)
    comparison = compare_reports(report(labels, first), report(labels, second), ("old.pt", "new.pt"))
    assert (comparison.gained, comparison.lost) == (18, 6)
    assert comparison.difference == pytest.approx(12 / 120)
    low, high = comparison.interval()
    assert (low, high) == pytest.approx((0.02201, 0.17799), abs=1e-5)  # 0.1 -+ 1.96 sqrt(24 - 144 / 120) / 120
    assert comparison.p_value == pytest.approx(exact_p(18, 6)) and comparison.p_value < 0.05
    assert comparison.agreement == pytest.approx(1 - (30 + 6) / 120)  # the 12 both miss: 1 against 2
    rows = comparison.per_class()
    assert rows["angry"] == {"faces": 40, "first_recall": 0.25, "second_recall": 0.7, "gained": 18, "lost": 0}
    assert rows["happy"] == {"faces": 40, "first_recall": 1.0, "second_recall": 0.85, "gained": 0, "lost": 6}
    assert rows["sad"]["gained"] == rows["sad"]["lost"] == 0
    assert comparison.verdict() == ("new.pt 85.00% against old.pt 75.00%: +10.00 points (95% interval "
                                    f"{100 * low:+.2f} to {100 * high:+.2f}); 18 faces gained, 6 lost; McNemar p = "
                                    f"{exact_p(18, 6):.3g}: more than chance (p < 0.05)")
    gained, lost = comparison.changed_faces(gained=True, limit=50), comparison.changed_faces(gained=False)
    assert sorted(f["index"] for f in gained) == list(range(12, 30))
    assert sorted(f["index"] for f in lost) == list(range(40, 46))
    assert gained[0] == {"index": gained[0]["index"], "true": "angry", "first": "happy", "second": "angry"}
    assert lost[0]["true"] == lost[0]["first"] == "happy" and lost[0]["second"] == "angry"
    assert len(comparison.changed_faces(gained=True, limit=5)) == 5
    comparison.second.probabilities[12:30, 0] = np.linspace(0.5, 0.9, 18)  # surer of the later ones
    assert [f["index"] for f in comparison.changed_faces(gained=True, limit=3)] == [29, 28, 27]
    even = compare_reports(report(labels, first), report(labels, first), ("a.pt", "b.pt"))
    assert (even.gained, even.lost, even.p_value, even.interval()) == (0, 0, 1.0, (0.0, 0.0))
    assert even.verdict().endswith("McNemar p = 1: within what chance gives")
    absent = compare_reports(report(labels[:80], first[:80]), report(labels[:80], second[:80]), ("a", "b"))
    assert absent.per_class()["sad"] == {"faces": 0, "first_recall": None, "second_recall": None, "gained": 0,
                                         "lost": 0}
    data = json.loads(json.dumps(comparison.to_json()))
    assert (data["gained"], data["lost"], data["faces"], data["first"]["checkpoint"]) == (18, 6, 120, "old.pt")
    assert data["per_class"]["angry"]["gained"] == 18 and data["notes"] == []


def test_only_the_same_faces_and_classes_compare() -> None:
    labels = np.repeat([0, 1, 2], 4)
    base = report(labels, labels)
    moved = report(labels, labels, images=np.ones((12, 48, 48), np.uint8))
    with pytest.raises(UserError, match="were scored on different faces"):
        compare_reports(base, moved, ("a.pt", "b.pt"))
    with pytest.raises(UserError, match="only models of the same classes compare"):
        compare_reports(base, report(labels, labels, classes=("angry", "happy", "fear")), ("a.pt", "b.pt"))
    seen = report(labels, labels)
    seen.seen = np.arange(12) < 5
    other = report(labels, labels)
    other.tta = False
    assert compare_reports(base, seen, ("a.pt", "b.pt")).notes() == [
        "b.pt trained on 5 of these faces (pixel for pixel)"]
    assert "the other without" in compare_reports(base, other, ("a.pt", "b.pt")).notes()[0]
    other.tta, other.dtype = True, "float32"
    base.dtype = "int8"
    assert compare_reports(base, other, ("a.pt", "b.pt")).notes() == ["a.pt ran in int8, b.pt in float32"]


def test_compare_scores_both_on_the_same_faces(tiny_checkpoint: Path, leaning_checkpoint: Path) -> None:
    comparison = compare(tiny_checkpoint, leaning_checkpoint, "synthetic:700", "test")
    first = evaluate(tiny_checkpoint, "synthetic:700", "test")
    second = evaluate(leaning_checkpoint, "synthetic:700", "test")
    right_first, right_second = first.predictions == first.labels, second.predictions == second.labels
    assert comparison.gained == int(np.sum(right_second & ~right_first))
    assert comparison.lost == int(np.sum(right_first & ~right_second)) > 0
    assert (comparison.first.accuracy, comparison.second.accuracy) == (first.accuracy, second.accuracy)
    assert comparison.per_class()["happy"]["second_recall"] >= comparison.per_class()["happy"]["first_recall"]


def test_compare_on_val_takes_the_first_models_carve(tiny_checkpoint: Path, leaning_checkpoint: Path,
                                                     tmp_path: Path) -> None:
    carved = tmp_path / "carved.pt"  # the leaning model, as if its run had held out other faces
    save_checkpoint(carved, {**read_checkpoint(leaning_checkpoint), "val_split": {"fraction": 0.2, "seed": 5}})
    comparison = compare(tiny_checkpoint, carved, "synthetic:2100", "val")
    assert np.array_equal(comparison.second.labels, evaluate(tiny_checkpoint, "synthetic:2100", "val").labels)
    assert len(evaluate(carved, "synthetic:2100", "val").labels) != len(comparison.second.labels)
    assert (comparison.first.split, comparison.first.data) == ("val", "synthetic:2100")


def test_the_compare_command(tiny_checkpoint: Path, leaning_checkpoint: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(leaning_checkpoint), "--against", str(tiny_checkpoint), "--data", "synthetic:700"]
    assert main(["compare", *args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["second"]["checkpoint"] == str(leaning_checkpoint) and data["faces"] == 140
    assert main(["compare", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "synthetic:700 [test] n=140"
    assert out[1].startswith("against  ") and str(tiny_checkpoint) in out[1]
    assert f"{data['gained']} faces gained, {data['lost']} lost; McNemar p = {data['mcnemar_p']:.3g}" in out[3]
    assert out[6].split() == ["angry", str(data["per_class"]["angry"]["faces"]),
                              f"{data['per_class']['angry']['first_recall']:.3f}",
                              f"{data['per_class']['angry']['second_recall']:.3f}",
                              str(data["per_class"]["angry"]["gained"]), str(data["per_class"]["angry"]["lost"])]
    renamed = tmp_path / "renamed.pt"
    save_checkpoint(renamed, {**read_checkpoint(tiny_checkpoint),
                              "classes": ["anger", "disgust", "fear", "happy", "neutral", "sad", "surprise"]})
    assert main(["compare", str(renamed), "--against", str(tiny_checkpoint), "--data", "synthetic:70"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "only models of the same classes compare" in err
