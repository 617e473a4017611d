"""Batched augmentation and the architecture registry."""
from __future__ import annotations

import random

import pytest
import torch

from fercore import models
from fercore.augment import AugmentConfig, augment_batch, mix_batch


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


def _mixing(**strengths: float) -> AugmentConfig:
    return AugmentConfig(**{**AugmentConfig.off().to_dict(), **strengths})


def test_mixup_blends_each_face_with_its_partner_by_lam() -> None:
    x = _batch()
    out, lam = mix_batch(x, _mixing(mixup=0.4), random.Random(3))
    assert 0 < lam < 1
    assert torch.allclose(out, lam * x + (1 - lam) * x.flip(0))
    again, same_lam = mix_batch(x, _mixing(mixup=0.4), random.Random(3))
    assert torch.equal(again, out) and same_lam == lam


def test_cutmix_pastes_one_patch_of_the_partner_and_lam_is_the_share_left() -> None:
    x = _batch()
    for seed in range(5):
        out, lam = mix_batch(x, _mixing(cutmix=1.0), random.Random(seed))
        pasted = (out != x).any(dim=0).squeeze(0)  # where any face changed: the patch (same box for all)
        rows, cols = pasted.any(1).nonzero().squeeze(1), pasted.any(0).nonzero().squeeze(1)
        if len(rows):
            box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
            assert torch.equal(out[..., box[0], box[1]], x.flip(0)[..., box[0], box[1]])
            assert pasted.sum() == len(rows) * len(cols)  # a rectangle
        assert lam == pytest.approx(1 - float(pasted.float().mean()))


def test_mixing_off_or_alone_leaves_the_batch() -> None:
    x = _batch()
    assert mix_batch(x, AugmentConfig(), random.Random(0)) == (x, 1.0)  # the default: off
    one = x[:1]
    assert mix_batch(one, _mixing(mixup=1.0), random.Random(0)) == (one, 1.0)


def test_with_both_on_each_batch_takes_one_of_them() -> None:
    x = _batch()
    kinds = set()
    for seed in range(20):
        out, lam = mix_batch(x, _mixing(mixup=1.0, cutmix=1.0), random.Random(seed))
        kinds.add("mixup" if torch.allclose(out, lam * x + (1 - lam) * x.flip(0)) else "cutmix")
    assert kinds == {"mixup", "cutmix"}


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
