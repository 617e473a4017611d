"""Knowledge distillation: teachers' averaged predictions as soft targets, and the loss that mixes them in."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fercore.checkpoint import load_model
from fercore.errors import UserError
from fercore.inference import Progress
from fercore.leakage import Holdout
from fercore.temperature import Temperatures


def teacher_probabilities(paths: Sequence[str | Path], faces: np.ndarray, classes: Sequence[str],
                          holdout: Holdout, device: torch.device, on_progress: Progress | None = None) -> torch.Tensor:
    """The teachers' class probabilities [N,C] for the faces, averaged, each with its own default TTA but not its
    temperature (that scales what a model says, not what it teaches: the targets stay those of the network, as before
    temperatures); on_progress(done, total) counts the faces of all teachers' passes (N x teachers in all).

    Each teacher must have the run's classes and must not have learned the run's validation faces (holdout):
    it would leak their labels into training."""
    teachers = [(path, load_model(path, device)) for path in paths]  # all checked before any runs
    for path, teacher in teachers:
        teacher.temperature = Temperatures()  # loaded for this pass alone: its network's probabilities
        if tuple(teacher.classes) != tuple(classes):
            raise UserError(f"teacher {path} predicts {', '.join(teacher.classes)}; the run needs "
                            f"{', '.join(classes)}")
        holdout.check(f"teacher {path}", teacher.info, teacher.learned, strict=True)
    total = torch.zeros(len(faces), len(classes))
    for before, (_, teacher) in enumerate(teachers):
        def told(done: int, _faces: int, offset: int = before * len(faces)) -> None:
            if on_progress:
                on_progress(offset + done, len(teachers) * len(faces))
        total += torch.as_tensor(teacher.proba(faces, on_progress=told))
    return total / len(paths)


class DistillationLoss(nn.Module):
    """(1 - weight) x the label loss + weight x cross-entropy against the teachers' probabilities."""

    def __init__(self, label_loss: nn.Module, weight: float):
        super().__init__()
        self.label_loss, self.weight = label_loss, weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        soft_loss = -(soft * logits.log_softmax(1)).sum(1).mean()
        return (1 - self.weight) * self.label_loss(logits, labels) + self.weight * soft_loss
