"""Batched augmentation and the architecture registry."""
from __future__ import annotations

import pytest
import torch

from fercore import models
from fercore.augment import AugmentConfig, augment_batch


def _batch() -> torch.Tensor:
    return torch.rand(16, 1, 48, 48, generator=torch.Generator().manual_seed(0))


def test_augment_keeps_shape_and_range() -> None:
    out = augment_batch(_batch(), AugmentConfig(), torch.Generator().manual_seed(1))
    assert out.shape == (16, 1, 48, 48) and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, _batch())


def test_augment_off_is_identity() -> None:
    x = _batch()
    assert torch.equal(augment_batch(x, AugmentConfig.off(), torch.Generator()), x)


def test_augment_is_seeded() -> None:
    a = augment_batch(_batch(), AugmentConfig(), torch.Generator().manual_seed(5))
    b = augment_batch(_batch(), AugmentConfig(), torch.Generator().manual_seed(5))
    c = augment_batch(_batch(), AugmentConfig(), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_only_mirrors() -> None:
    x = _batch()
    out = augment_batch(x, AugmentConfig(**{**AugmentConfig.off().to_dict(), "hflip": 1.0}), torch.Generator())
    assert torch.equal(out, x.flip(-1))


def test_erase_only_changes_a_rectangle() -> None:
    x = torch.zeros(8, 1, 48, 48)
    cfg = AugmentConfig(**{**AugmentConfig.off().to_dict(), "erase": 1.0})
    changed = (augment_batch(x, cfg, torch.Generator().manual_seed(0)) != 0).float().mean(dim=(1, 2, 3))
    assert torch.all(changed > 0) and torch.all(changed < 0.3)


def test_config_round_trip() -> None:
    cfg = AugmentConfig(rotate=3.0)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name, classes, params", [("basic", 7, 1_572_071), ("vgg", 7, 9_937_223),
                                                   ("fernet", 7, 2_113_639), ("fernet", 4, 2_112_868)])
def test_each_architecture_runs_and_has_its_parameter_count(name: str, classes: int, params: int) -> None:
    model = models.build(name, classes).eval()
    assert models.parameter_count(model) == params
    assert model(torch.zeros(2, 1, 48, 48)).shape == (2, classes)


def test_registry_lists_names_and_refuses_unknown() -> None:
    assert {"basic", "vgg", "fernet"} <= set(models.names())
    assert all(a.description for a in models.ARCHITECTURES.values())
    with pytest.raises(ValueError, match="unknown architecture"):
        models.build("resnet1000")


def test_width_factor_scales_every_stage_and_reads_back() -> None:
    assert models.width_args("fernet", 1) == {}
    wide = models.width_args("fernet", 1.5)
    assert wide == {"widths": [48, 96, 192, 384]}
    assert models.width_factor("fernet", wide) == 1.5 and models.width_factor("fernet", {}) == 1.0
    narrow, wider = (models.parameter_count(models.build("fernet", 7, **args)) for args in ({}, wide))
    assert 2.0 < wider / narrow < 2.3  # conv parameters grow with the square of the width
