"""Evaluating a checkpoint on a data split: accuracy, macro F1, per-class report, confusion, mistakes."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fercore import leakage
from fercore.checkpoint import LoadedModel, load_model
from fercore.data import FaceData, FaceSet, load_data
from fercore.inference import Progress
from fercore.metrics import Calibration, calibration, confusion_matrix, macro_f1, per_class_scores


@dataclass
class EvalReport:
    """Everything the Evaluate page and `evaluate --json` show."""

    classes: tuple[str, ...]
    labels: np.ndarray  # true class index per face
    probabilities: np.ndarray  # [N, C]
    faces: FaceSet
    tta: bool
    dtype: str = ""  # what the model ran at: int8, bfloat16, float32...
    split: str = ""
    data: str = ""
    data_note: str = ""  # what the reader skipped in the data (LoadReport.summary), or nothing
    seen: np.ndarray | None = None  # per face: pixel for pixel one the model trained on (None: not known)
    positions: np.ndarray | None = None  # each face's place in the evaluated split (None: 0..N-1, all of it)
    left_out: int = 0  # the split's faces the model trained on that without_seen left out
    temperature: float = 1.0  # what the model's probabilities were scaled by (fercore.temperature)

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predictions == self.labels)) if len(self.labels) else 0.0

    @property
    def macro_f1(self) -> float:
        return macro_f1(self.confusion())

    def absent_note(self) -> str:
        """What to know when some of the model's classes have no faces here ('' when all have)."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        absent = ", ".join(c for c, n in zip(self.classes, counts) if not n)
        return f"no {absent} faces here: macro F1 averages the classes present or predicted" if absent else ""

    @property
    def indices(self) -> np.ndarray:
        """Each face's place in the evaluated split."""
        return np.arange(len(self.labels)) if self.positions is None else self.positions

    @property
    def seen_in_training(self) -> int | None:
        """How many of these faces are, pixel for pixel, faces the model trained on (None: not known)."""
        return None if self.seen is None else int(self.seen.sum())

    @property
    def unseen_accuracy(self) -> float | None:
        """Accuracy on the faces the model did not train on (None: not known, or no such faces)."""
        if self.seen is None or self.seen.all():
            return None
        return float(np.mean(self.predictions[~self.seen] == self.labels[~self.seen]))

    def without_seen(self) -> EvalReport:
        """The report of the faces the model did not train on alone (itself when there are none to leave out)."""
        if not self.seen_in_training:
            return self
        keep = ~self.seen
        faces = FaceSet(self.faces.images[keep], self.labels[keep], self.faces.classes)
        return replace(self, labels=faces.labels, probabilities=self.probabilities[keep], faces=faces,
                       seen=np.zeros(len(faces), dtype=bool), positions=self.indices[keep],
                       left_out=self.seen_in_training)

    def seen_note(self) -> str:
        """What to know when the model trained on some of these very faces ('' when none, or unknown)."""
        if not self.seen_in_training:
            return ""
        seen, n = self.seen_in_training, len(self.labels)
        rest = self.unseen_accuracy
        return (f"{seen:,} of these {n:,} faces ({seen / n:.1%}) are, pixel for pixel, faces the model trained on: "
                + ("accuracy here overstates it" if rest is None else
                   f"its accuracy on the other {n - seen:,} is {rest:.1%}"))

    def per_class(self) -> dict[str, dict[str, float]]:
        scores = per_class_scores(self.confusion())
        return {c: {"precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
                    "f1": float(scores["f1"][i]), "support": int(scores["support"][i])}
                for i, c in enumerate(self.classes)}

    def scaling_note(self) -> str:
        """What to know about the probabilities' temperature ('' when they are the network's own)."""
        if self.temperature == 1.0:
            return ""
        return (f"probabilities scaled by the model's temperature {self.temperature:g}, fitted on its validation "
                "faces: its calibration there flatters it, and its card gives the cross-fitted one")

    def calibration(self, bins: int = 10) -> Calibration:
        """How well the confidence of its predictions matches how often they are right."""
        return calibration(self.probabilities, self.labels, bins)

    def confusion(self) -> np.ndarray:
        """Counts, rows = true class, columns = predicted class."""
        return confusion_matrix(self.labels, self.predictions, len(self.classes))

    def _wrong(self, true: str | None, predicted: str | None) -> np.ndarray:
        """Positions of the wrong predictions, of a true and/or predicted class when named."""
        wrong = self.predictions != self.labels
        if true is not None:
            wrong &= self.labels == self.classes.index(true)
        if predicted is not None:
            wrong &= self.predictions == self.classes.index(predicted)
        return np.flatnonzero(wrong)

    def count_mistakes(self, true: str | None = None, predicted: str | None = None) -> int:
        """How many wrong predictions there are (of a true and/or predicted class when named)."""
        return len(self._wrong(true, predicted))

    def mistakes(self, limit: int = 24, true: str | None = None, predicted: str | None = None) -> list[dict[str, Any]]:
        """The most confident wrong predictions, most confident first; only those of a true and/or predicted class
        when named."""
        wrong = self._wrong(true, predicted)
        conf = self.probabilities[wrong, self.predictions[wrong]]
        order = wrong[np.argsort(-conf, kind="stable")][:limit]
        return [{"index": int(i), "true": self.classes[self.labels[i]], "predicted": self.classes[self.predictions[i]],
                 "confidence": float(self.probabilities[i, self.predictions[i]])} for i in order]

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "n": int(len(self.labels)),
                "classes": list(self.classes), "per_class": self.per_class(),
                "confusion": self.confusion().tolist(), "tta": self.tta, "dtype": self.dtype,
                "split": self.split, "data": self.data, "seen_in_training": self.seen_in_training,
                "accuracy_unseen": self.unseen_accuracy, "left_out_seen": self.left_out,
                "calibration": self.calibration().to_json(), "temperature": self.temperature}


def own_split(checkpoint: dict[str, Any], source: FaceData, split: str) -> FaceSet:
    """A split of source in the checkpoint's classes; val is the checkpoint's own carve of train."""
    carve = checkpoint.get("val_split", {"fraction": 0.1, "seed": 0})
    return source.split(split, tuple(checkpoint["classes"]), carve["fraction"], carve["seed"], every_class=False)


def evaluate_faces(loaded: LoadedModel, faces: FaceSet, tta: bool | None = None,
                   on_progress: Progress | None = None) -> EvalReport:
    """Evaluate a loaded model on faces labelled with the model's own classes."""
    use_tta = loaded.tta if tta is None else tta
    probs = loaded.proba(faces.images, use_tta, on_progress)
    seen = None if loaded.learned is None else np.isin(leakage.digests(faces.images), loaded.learned)
    return EvalReport(loaded.classes, faces.labels, probs, faces, use_tta, loaded.dtype, seen=seen,
                      temperature=loaded.temperature.for_views(use_tta))


def evaluate_split(loaded: LoadedModel, source: FaceData, split: str, tta: bool | None = None,
                   on_progress: Progress | None = None, carve_of: dict[str, Any] | None = None) -> EvalReport:
    """Evaluate a loaded model on one split of a data source; val is the model's own carve of train, or that of
    the checkpoint (or card) carve_of when given, so that two models can be scored on the same faces."""
    report = evaluate_faces(loaded, own_split(carve_of or loaded.info, source, split), tta, on_progress)
    report.split, report.data, report.data_note = split, source.source, source.raw.report.summary()
    return report


def evaluate(checkpoint: str | Path, data: str | Path | FaceData, split: str = "test", tta: bool | None = None,
             precision: str = "auto", device: str = "auto", on_progress: Progress | None = None,
             carve_of: dict[str, Any] | None = None) -> EvalReport:
    """Load a checkpoint and a data source (or take data already loaded) and evaluate one split (see
    evaluate_split)."""
    loaded = load_model(checkpoint, device, precision)  # a bad checkpoint is told before the data is read
    source = data if isinstance(data, FaceData) else load_data(data)
    return evaluate_split(loaded, source, split, tta, on_progress, carve_of)
