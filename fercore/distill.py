"""Knowledge distillation: teachers' averaged predictions as soft targets, and the loss that mixes them in."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fercore import hardware
from fercore.checkpoint import LoadedModel, load_model
from fercore.errors import UserError
from fercore.inference import Progress
from fercore.leakage import Holdout
from fercore.temperature import Temperatures


def load_teachers(paths: Sequence[str | Path], classes: Sequence[str], holdout: Holdout, device: torch.device,
                  precision: str = "auto") -> list[LoadedModel]:
    """The teachers, each checked (all before any runs): they must have the run's classes and must not have learned
    the run's validation faces (holdout): that would leak their labels into training."""
    teachers = []
    for path in paths:
        teacher = load_model(path, device, precision)
        teacher.temperature = Temperatures()  # what a model teaches is its network's probabilities, unscaled
        if tuple(teacher.classes) != tuple(classes):
            raise UserError(f"teacher {path} predicts {', '.join(teacher.classes)}; the run needs "
                            f"{', '.join(classes)}")
        holdout.check(f"teacher {path}", teacher.info, teacher.learned, strict=True)
        teachers.append(teacher)
    return teachers


def teacher_probabilities(paths: Sequence[str | Path], faces: np.ndarray, classes: Sequence[str],
                          holdout: Holdout, device: torch.device, on_progress: Progress | None = None) -> torch.Tensor:
    """The teachers' class probabilities [N,C] for the faces, averaged, each with its own default TTA but not its
    temperature; on_progress(done, total) counts the faces of all teachers' passes (N x teachers in all)."""
    teachers = load_teachers(paths, classes, holdout, device)
    total = torch.zeros(len(faces), len(classes))
    for before, teacher in enumerate(teachers):
        def told(done: int, _faces: int, offset: int = before * len(faces)) -> None:
            if on_progress:
                on_progress(offset + done, len(teachers) * len(faces))
        total += torch.as_tensor(teacher.proba(faces, on_progress=told))
    return total / len(paths)


class LiveTeachers:
    """Teachers that label every training batch as the student sees it, augmented and mixed (consistent targets:
    a face with its mouth erased is taught what the teachers make of that face, not of the whole one)."""

    def __init__(self, teachers: list[LoadedModel], amp: torch.dtype | None):
        self.teachers = teachers
        for teacher in teachers:
            teacher.model.to(memory_format=torch.channels_last)
        self.amp = amp

    def __call__(self, x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
        """The teachers' averaged probabilities [B,C] (float32) for the student's input batch x, normalised with the
        student's mean and std: teacher t wants (face - t.mean) / t.std = (x * std + mean - t.mean) / t.std."""
        faces = x * std + mean  # once, not once per teacher
        with torch.no_grad(), hardware.autocast(x.device, self.amp):
            total = sum(t.model((faces - t.mean) / t.std).float().softmax(1) for t in self.teachers)
        return total / len(self.teachers)


class DistillationLoss(nn.Module):
    """(1 - weight) x the label loss + weight x cross-entropy against the teachers' probabilities."""

    def __init__(self, label_loss: nn.Module, weight: float):
        super().__init__()
        self.label_loss, self.weight = label_loss, weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        soft_loss = -(soft * logits.log_softmax(1)).sum(1).mean()
        return (1 - self.weight) * self.label_loss(logits, labels) + self.weight * soft_loss
