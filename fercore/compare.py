"""Two models on the same faces: the faces one gets right and the other misses, and whether the difference in
accuracy is more than chance (McNemar's exact test on those faces, and a 95% interval for the difference)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fercore.checkpoint import load_model
from fercore.data import FaceData, load_data
from fercore.errors import UserError
from fercore.evaluate import EvalReport, evaluate_faces, own_split
from fercore.paths import shown

Z95 = 1.959964  # the normal quantile of a two-sided 95% interval
SIGNIFICANT = 0.05  # the p-value under which the verdict calls a difference real


def mcnemar_p(gained: int, lost: int) -> float:
    """McNemar's exact two-sided p-value: how likely a split of the discordant faces at least this uneven is when
    both models are equally good (each such face a fair coin)."""
    n, k = gained + lost, min(gained, lost)
    if n == 0:
        return 1.0
    log_half = n * math.log(0.5)
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half)
               for i in range(k + 1))
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Comparison:
    """The second model against the first, on the same faces (gained: right by the second, wrong by the first)."""

    names: tuple[str, str]
    first: EvalReport
    second: EvalReport

    @property
    def gained(self) -> int:
        return int(self._changed(gained=True).sum())

    @property
    def lost(self) -> int:
        return int(self._changed(gained=False).sum())

    def changed_faces(self, gained: bool, limit: int = 12) -> list[dict[str, Any]]:
        """The faces gained (or lost), those the model that got them right was surest of first: each one's place,
        its true class and both models' labels."""
        picked = np.flatnonzero(self._changed(gained))
        sure = (self.second if gained else self.first).probabilities[picked, self.first.labels[picked]]
        order = picked[np.argsort(-sure, kind="stable")][:limit]
        classes = self.first.classes
        return [{"index": int(i), "true": classes[self.first.labels[i]],
                 "first": classes[self.first.predictions[i]], "second": classes[self.second.predictions[i]]}
                for i in order]

    @property
    def difference(self) -> float:
        """Accuracy of the second minus that of the first."""
        return self.second.accuracy - self.first.accuracy

    @property
    def p_value(self) -> float:
        return mcnemar_p(self.gained, self.lost)

    def interval(self) -> tuple[float, float]:
        """A 95% interval for the difference in accuracy (the paired Wald interval)."""
        n, changed, net = len(self.first.labels), self.gained + self.lost, self.gained - self.lost
        spread = Z95 * math.sqrt(max(changed - net**2 / n, 0.0)) / n if n else 0.0
        return self.difference - spread, self.difference + spread

    @property
    def agreement(self) -> float:
        """The share of faces both models give the same label."""
        return float(np.mean(self.first.predictions == self.second.predictions)) if len(self.first.labels) else 1.0

    def verdict(self) -> str:
        """One line: the difference, its interval, the faces that changed and what the test makes of them."""
        low, high = self.interval()
        real = "a real difference" if self.p_value < SIGNIFICANT else "no real difference at this size"
        return (f"{self.names[1]} {self.second.accuracy:.2%} against {self.names[0]} {self.first.accuracy:.2%}: "
                f"{100 * self.difference:+.2f} points (95% interval {100 * low:+.2f} to {100 * high:+.2f}); "
                f"{self.gained:,} faces gained, {self.lost:,} lost; McNemar p = {self.p_value:.3g}: {real}")

    def per_class(self) -> dict[str, dict[str, float]]:
        """Per true class: each model's recall and the faces the second gained and lost."""
        first, second = self._right(self.first), self._right(self.second)
        rows = {}
        for index, name in enumerate(self.first.classes):
            mine = self.first.labels == index
            rows[name] = {"faces": int(mine.sum()),
                          "first_recall": float(first[mine].mean()) if mine.any() else 0.0,
                          "second_recall": float(second[mine].mean()) if mine.any() else 0.0,
                          "gained": int(np.sum(second[mine] & ~first[mine])),
                          "lost": int(np.sum(first[mine] & ~second[mine]))}
        return rows

    def notes(self) -> list[str]:
        """What could tilt the comparison: faces a model trained on, and the different views or precisions."""
        notes = [f"{name} trained on {report.seen_in_training:,} of these faces: the comparison favours it"
                 for name, report in zip(self.names, (self.first, self.second)) if report.seen_in_training]
        if self.first.tta != self.second.tta:
            notes.append("one model ran with test-time augmentation and the other without")
        return notes

    def to_json(self) -> dict[str, Any]:
        low, high = self.interval()
        return {"first": {"checkpoint": self.names[0], **self._summary(self.first)},
                "second": {"checkpoint": self.names[1], **self._summary(self.second)},
                "faces": len(self.first.labels), "difference": self.difference, "interval95": [low, high],
                "gained": self.gained, "lost": self.lost, "mcnemar_p": self.p_value, "agreement": self.agreement,
                "per_class": self.per_class(), "notes": self.notes()}

    def _changed(self, gained: bool) -> np.ndarray:
        """Per face: right by the second and wrong by the first (gained), or the reverse."""
        first, second = self._right(self.first), self._right(self.second)
        return second & ~first if gained else first & ~second

    @staticmethod
    def _right(report: EvalReport) -> np.ndarray:
        return report.predictions == report.labels

    @staticmethod
    def _summary(report: EvalReport) -> dict[str, Any]:
        return {"accuracy": report.accuracy, "macro_f1": report.macro_f1, "tta": report.tta, "dtype": report.dtype}


def compare_reports(first: EvalReport, second: EvalReport, names: tuple[str, str]) -> Comparison:
    """The comparison of two reports on the same faces; refused when the faces or the classes differ."""
    _same_classes(first.classes, second.classes, names)
    if not (np.array_equal(first.labels, second.labels) and np.array_equal(first.faces.images, second.faces.images)):
        raise UserError(f"{names[0]} and {names[1]} were scored on different faces (their validation carves differ: "
                        "compare them on a test split, or on all the faces)")
    return Comparison(names, first, second)


def compare(first: str | Path, second: str | Path, data: str | Path | FaceData, split: str = "test",
            tta: bool | None = None, precision: str = "auto", device: str = "auto") -> Comparison:
    """Load two checkpoints and score both on the same faces: one split of data (val: the first model's carve),
    each with its own TTA default unless told."""
    models = [load_model(path, device, precision) for path in (first, second)]  # both checked before any work
    _same_classes(models[0].classes, models[1].classes, (shown(str(first)), shown(str(second))))
    source = data if isinstance(data, FaceData) else load_data(data)
    faces = own_split(models[0].info, source, split)
    first_report, second_report = (evaluate_faces(model, faces, tta) for model in models)
    return compare_reports(first_report, second_report, (shown(str(first)), shown(str(second))))


def _same_classes(first: tuple[str, ...], second: tuple[str, ...], names: tuple[str, str]) -> None:
    if first != second:
        raise UserError(f"{names[1]} predicts {', '.join(second)}; {names[0]} predicts {', '.join(first)}: only "
                        "models of the same classes compare")
