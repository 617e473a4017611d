"""Weight averaging and batch-norm statistics (fercore.swa)."""
from __future__ import annotations

import torch
from torch import nn

from fercore.swa import WeightAverage


def test_the_average_is_the_plain_mean_and_survives_its_state_dict() -> None:
    model = nn.Linear(3, 2)
    average, snapshots = WeightAverage(), []
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            model.weight.fill_(value)
        snapshots.append(model.weight.detach().clone())
        average.add(model)
    restored = WeightAverage()
    restored.load_state_dict(average.state_dict())
    assert restored.count == 3
    elsewhere = WeightAverage()
    elsewhere.load_state_dict(average.state_dict(), "meta")  # kept on the training device, not where it was loaded
    assert elsewhere.mean["weight"].device.type == "meta"
    assert torch.allclose(restored.mean["weight"], torch.stack(snapshots).mean(0))


def test_batch_norm_statistics_are_the_average_over_the_batches() -> None:
    model = nn.Sequential(nn.BatchNorm1d(2, momentum=0.3))
    batches = [torch.randn(16, 2) * scale + shift for scale, shift in ((1, 0), (2, 5), (0.5, -1))]
    model.eval()
    average = WeightAverage()
    average.add(model)
    norm = average.averaged_model(model, batches)[0]
    assert torch.allclose(norm.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0), atol=1e-5)
    assert torch.allclose(norm.running_var, torch.stack([b.var(0) for b in batches]).mean(0), atol=1e-4)
    assert norm.momentum == 0.3 and not model.training  # left as it was found
    assert torch.equal(model[0].running_mean, torch.zeros(2))  # the trained model's own statistics untouched


def test_the_averaged_model_has_the_mean_weights_and_leaves_the_model_alone() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage()
    average.add(model)
    first = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    average.add(model)
    averaged = average.averaged_model(model, [torch.randn(8, 2)])
    assert torch.allclose(averaged[0].weight, first + 0.5)
    assert torch.allclose(model[0].weight, first + 1.0) and not averaged.training
