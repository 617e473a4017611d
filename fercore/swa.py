"""Stochastic weight averaging: the running mean of a model's weights over the last epochs of a run.

The averaged weights are a model of their own, whose batch-norm statistics are recomputed on the training faces
(averaged weights with the last epoch's statistics would be out of step with each other) by torch's update_bn.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import update_bn


class WeightAverage:
    """The equal-weight mean of the parameters seen by `add`, kept in float32 beside the trained model."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}

    def add(self, model: nn.Module) -> None:
        """Fold the model's current parameters into the mean."""
        self.count += 1
        with torch.no_grad():
            for name, param in model.named_parameters():
                value = param.detach().float()
                if name not in self.mean:
                    self.mean[name] = value.clone()
                else:
                    self.mean[name] += (value - self.mean[name]) / self.count

    def averaged_model(self, model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
        """A copy of model with the mean parameters and batch-norm statistics recomputed over batches."""
        averaged = copy.deepcopy(model)
        with torch.no_grad():
            for name, param in averaged.named_parameters():
                param.copy_(self.mean[name])
        update_bn(batches, averaged)  # running statistics: plain averages over the batches
        return averaged.eval()

    def state_dict(self) -> dict[str, object]:
        return {"count": self.count, "mean": self.mean}

    def load_state_dict(self, state: dict[str, object], device: torch.device | str = "cpu") -> None:
        """Continue from state_dict()'s mean, kept on device (the model's: checkpoints load onto the CPU)."""
        self.count = int(state["count"])  # type: ignore[call-overload]
        self.mean = {name: value.to(device) for name, value in state["mean"].items()}  # type: ignore[attr-defined]

