"""Two models on the same faces: the faces one gets right and the other misses, and whether the difference in
accuracy is more than chance (McNemar's exact test on those faces, and a 95% interval for the difference)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from fercore.checkpoint import LoadedModel, load_model
from fercore.data import FaceData, load_data
from fercore.errors import UserError
from fercore.evaluate import EvalReport, evaluate_split
from fercore.paths import shown

Z95 = 1.959964  # the normal quantile of a two-sided 95% interval
SIGNIFICANT = 0.05  # the p-value under which the verdict calls a difference more than chance


def mcnemar_p(gained: int, lost: int) -> float:
    """McNemar's exact two-sided p-value: how likely a split of the discordant faces at least this uneven is when
    both models are equally good (each such face a fair coin). 0.0 when it underflows (under about 1e-308)."""
    n, k = gained + lost, min(gained, lost)
    if n == 0:
        return 1.0
    log_half = n * math.log(0.5)
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half)
               for i in range(k + 1))
    return min(1.0, 2 * tail)


def p_text(p_value: float) -> str:
    """A p-value as people read it: 3 significant digits, or how small it is when it underflowed."""
    return f"{p_value:.3g}" if p_value > 0 else "< 1e-300"


@dataclass(frozen=True)
class Comparison:
    """The second model against the first, on the same faces (gained: right by the second, wrong by the first)."""

    names: tuple[str, str]
    first: EvalReport
    second: EvalReport

    @property
    def gained(self) -> int:
        """Faces the second gets right and the first wrong."""
        return int(self._changed(gained=True).sum())

    @property
    def lost(self) -> int:
        """Faces the first gets right and the second wrong."""
        return int(self._changed(gained=False).sum())

    @property
    def difference(self) -> float:
        """Accuracy of the second minus that of the first."""
        return self.second.accuracy - self.first.accuracy

    @property
    def p_value(self) -> float:
        """McNemar's exact p-value on the faces gained and lost (mcnemar_p)."""
        return mcnemar_p(self.gained, self.lost)

    def interval(self) -> tuple[float, float]:
        """A 95% interval for the difference in accuracy (the paired Wald interval; of zero width when no face
        changed, or when every face did, all the same way)."""
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
        chance = (f"more than chance (p < {SIGNIFICANT:g})" if self.p_value < SIGNIFICANT
                  else "within what chance gives")
        return (f"{self.names[1]} {self.second.accuracy:.2%} against {self.names[0]} {self.first.accuracy:.2%}: "
                f"{100 * self.difference:+.2f} points (95% interval {100 * low:+.2f} to {100 * high:+.2f}); "
                f"{self.gained:,} faces gained, {self.lost:,} lost; McNemar p = {p_text(self.p_value)}: {chance}")

    def per_class(self) -> dict[str, dict[str, Any]]:
        """Per true class: its faces, each model's recall (None without faces) and the faces gained and lost."""
        right, gained, lost = self._right, self._changed(gained=True), self._changed(gained=False)
        rows = {}
        for index, name in enumerate(self.first.classes):
            mine = self.first.labels == index
            rows[name] = {"faces": int(mine.sum()),
                          "first_recall": float(right[0][mine].mean()) if mine.any() else None,
                          "second_recall": float(right[1][mine].mean()) if mine.any() else None,
                          "gained": int(gained[mine].sum()), "lost": int(lost[mine].sum())}
        return rows

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

    def notes(self) -> list[str]:
        """What could tilt the comparison: faces a model trained on, and different views or precisions."""
        notes = [f"{name} trained on {report.seen_in_training:,} of these faces (pixel for pixel)"
                 for name, report in zip(self.names, (self.first, self.second)) if report.seen_in_training]
        if self.first.tta != self.second.tta:
            notes.append("one model ran with test-time augmentation and the other without")
        if self.first.dtype != self.second.dtype:
            notes.append(f"{self.names[0]} ran in {self.first.dtype}, {self.names[1]} in {self.second.dtype}")
        return notes

    def to_json(self) -> dict[str, Any]:
        """Everything above, for `compare --json`."""
        low, high = self.interval()
        return {"first": {"checkpoint": self.names[0], **self._summary(self.first)},
                "second": {"checkpoint": self.names[1], **self._summary(self.second)},
                "data": self.first.data, "split": self.first.split, "faces": len(self.first.labels),
                "difference": self.difference, "interval95": [low, high], "gained": self.gained, "lost": self.lost,
                "mcnemar_p": self.p_value, "agreement": self.agreement, "per_class": self.per_class(),
                "notes": self.notes()}

    @cached_property
    def _right(self) -> tuple[np.ndarray, np.ndarray]:
        """Per face: whether the first and whether the second model got it right."""
        return self.first.predictions == self.first.labels, self.second.predictions == self.second.labels

    def _changed(self, gained: bool) -> np.ndarray:
        """Per face: right by the second and wrong by the first (gained), or the reverse."""
        first, second = self._right
        return second & ~first if gained else first & ~second

    @staticmethod
    def _summary(report: EvalReport) -> dict[str, Any]:
        return {"accuracy": report.accuracy, "macro_f1": report.macro_f1, "tta": report.tta, "dtype": report.dtype}


def compare_reports(first: EvalReport, second: EvalReport, names: tuple[str, str]) -> Comparison:
    """The comparison of two reports on the same faces; refused when the faces or the classes differ."""
    _same_classes(first.classes, second.classes, names)
    if not (np.array_equal(first.labels, second.labels) and np.array_equal(first.faces.images, second.faces.images)):
        raise UserError(f"{names[0]} and {names[1]} were scored on different faces: score the second on the "
                        "first's split (evaluate_split's carve_of)")
    return Comparison(names, first, second)


def compare(first: str | Path, second: str | Path, data: str | Path | FaceData, split: str = "test",
            tta: bool | None = None, precision: str = "auto", device: str = "auto") -> Comparison:
    """Load two checkpoints and score both on the same faces: one split of data (val: the first model's carve),
    each with its own TTA default unless told."""
    names = (shown(str(first)), shown(str(second)))
    models = [load_model(path, device, precision) for path in (first, second)]  # both checked before any work
    _same_classes(models[0].classes, models[1].classes, names)
    source = data if isinstance(data, FaceData) else load_data(data)
    return compare_loaded(models[0], models[1], source, split, names, tta)


def compare_loaded(first: LoadedModel, second: LoadedModel, source: FaceData, split: str, names: tuple[str, str],
                   tta: bool | None = None, carve_of: dict[str, Any] | None = None) -> Comparison:
    """Two loaded models on one split of data (val: the carve of carve_of, else of the first model)."""
    _same_classes(first.classes, second.classes, names)
    reports = [evaluate_split(model, source, split, tta, carve_of=carve_of or first.info) for model in (first, second)]
    return compare_reports(*reports, names)


def _same_classes(first: tuple[str, ...], second: tuple[str, ...], names: tuple[str, str]) -> None:
    if first != second:
        raise UserError(f"{names[1]} predicts {', '.join(second)}; {names[0]} predicts {', '.join(first)}: only "
                        "models of the same classes compare")
