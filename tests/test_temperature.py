"""A temperature for a model's probabilities: scaling keeps every label, fitting undoes a known distortion, and a
checkpoint's temperatures (one for TTA, one for a single view) are what its LoadedModel applies."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fercore.checkpoint import TEMPERATURE, CheckpointError, model_from_checkpoint, read_checkpoint, temperatures_of
from fercore.metrics import calibration
from fercore.temperature import Temperatures, cross_fitted, fit_temperature, log_loss, sharpen


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def calibrated_faces(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from their own softmax: softmax(logits) is exactly calibrated."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, (n, 7))
    probs = softmax(logits)
    labels = np.array([rng.choice(7, p=p) for p in probs])
    return logits, labels


def test_scaling_keeps_each_label_and_sharpens_or_softens() -> None:
    probs = softmax(np.random.default_rng(1).normal(0, 1, (50, 7))).astype(np.float32)
    assert sharpen(probs, 1.0) is probs
    sharp, soft = sharpen(probs, 0.5), sharpen(probs, 2.0)
    for scaled in (sharp, soft):
        assert scaled.dtype == np.float64 and np.allclose(scaled.sum(1), 1, atol=1e-9)
        assert (scaled.argmax(1) == probs.argmax(1)).all()
    assert (sharp.max(1) > probs.max(1)).all() and (soft.max(1) < probs.max(1)).all()
    np.testing.assert_allclose(sharpen(np.array([[0.5, 0.5, 0.0]]), 0.5), [[0.5, 0.5, 0.0]], atol=1e-9)
    top = np.random.default_rng(0).uniform(0.4, 0.49, 2000).astype(np.float32)
    near = np.stack([np.nextafter(top, np.float32(0)), top, 1 - 2 * top], 1)  # the top two a float32 step apart
    for temperature in (0.5, 0.81, 2.0):  # float32 arithmetic turned hundreds of these into ties won by class 0
        assert (sharpen(near, temperature).argmax(1) == 1).all()


@pytest.mark.parametrize("distortion", [0.1, 0.5, 2.0, 8.0])  # 0.1 and 8: beyond the old grid's 0.25-4
def test_fitting_undoes_a_known_temperature(distortion: float) -> None:
    logits, labels = calibrated_faces()
    distorted = softmax(logits / distortion)  # under- (2.0) or overconfident (0.5)
    fitted = fit_temperature(distorted, labels)
    assert fitted == pytest.approx(1 / distortion, rel=0.1)
    assert log_loss(sharpen(distorted, fitted), labels) < log_loss(distorted, labels)
    honest = calibration(cross_fitted(distorted, labels), labels)
    assert honest.error < 0.03 < calibration(distorted, labels).error
    assert fit_temperature(np.zeros((0, 7)), np.zeros(0, int)) == 1.0


def test_a_checkpoints_temperature_scales_what_its_model_gives(tiny_checkpoint: Path) -> None:
    raw = read_checkpoint(tiny_checkpoint)
    faces = np.random.default_rng(0).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    plain = model_from_checkpoint(raw, "tiny").proba(faces)
    one_view = model_from_checkpoint(raw, "tiny").proba(faces, tta=False)
    scaled = model_from_checkpoint({**raw, TEMPERATURE: 0.5}, "tiny")  # as shipped before per-view temperatures
    assert scaled.temperature == Temperatures(0.5, 0.5)
    np.testing.assert_allclose(scaled.proba(faces), sharpen(plain, 0.5), atol=1e-6)
    per_view = model_from_checkpoint({**raw, TEMPERATURE: {"tta": 0.5, "one_view": 2.0}}, "tiny")
    assert per_view.temperature == Temperatures(0.5, 2.0)
    np.testing.assert_allclose(per_view.proba(faces), sharpen(plain, 0.5), atol=1e-6)
    np.testing.assert_allclose(per_view.proba(faces, tta=False), sharpen(one_view, 2.0), atol=1e-6)
    for bad in (-1.0, 0, float("nan"), "warm", True, {"tta": 0.5}, {"tta": 0.5, "one_view": -2}, [0.5, 0.5]):
        with pytest.raises(CheckpointError, match="is not a positive number"):
            model_from_checkpoint({**raw, TEMPERATURE: bad}, "tiny")
    assert torch.load(tiny_checkpoint, weights_only=True).get(TEMPERATURE) is None  # runs are not scaled
    assert temperatures_of(raw, "tiny") == Temperatures(1.0, 1.0)  # read without building the model
    assert temperatures_of({**raw, TEMPERATURE: {"tta": 0.8, "one_view": 0.9}}, "tiny") == Temperatures(0.8, 0.9)
