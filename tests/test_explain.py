"""Occlusion maps: where hiding a face's parts changes a class's probability, their drawing, and saving them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fercore.checkpoint import LoadedModel
from fercore.explain import PATCH, _patch_origins, occlusion_maps, overlay, save_maps
from fercore.predict import FacePrediction, ImagePrediction, Predictor

CLASSES = ("happy", "sad", "neutral")


class TopLeftReader(nn.Module):
    """Says 'happy' the brighter the face's top-left 12x12 corner is, 'sad' the darker; blind to the rest."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, 0, :12, :12].mean((1, 2))
        return torch.stack([4 * corner, -4 * corner, torch.zeros_like(corner)], 1)


def reader(tta: bool = False) -> LoadedModel:
    model = TopLeftReader()
    return LoadedModel(model, CLASSES, 0.5, 0.25, 48, tta, {}, model, "float32")


def corner_face() -> np.ndarray:
    face = np.full((48, 48), 60, np.uint8)  # darker than the grey that hides a patch
    face[:12, :12] = 255
    return face


def test_the_map_marks_the_part_the_model_reads_and_nothing_else() -> None:
    (happy,) = occlusion_maps(reader(), corner_face())  # default: the class predicted
    assert happy.target == "happy" and happy.probability > 0.9
    assert happy.drop[:12, :12].min() > 0.05  # hiding the bright corner takes 'happy' away
    assert np.all(happy.drop[24:, :] == 0) and np.all(happy.drop[:, 24:] == 0)  # no patch there reaches the corner
    assert happy.strongest() == pytest.approx(float(happy.drop.max()))
    assert happy.describe() == (f"hiding a red part lowers happy (by up to {100 * happy.strongest():.0f} points), "
                                "hiding a blue part raises it")


def test_a_map_for_another_class_shows_the_opposite_evidence() -> None:
    happy, sad = occlusion_maps(reader(), corner_face(), [0, 1])
    assert sad.target == "sad" and sad.probability < 0.05
    assert sad.drop[:12, :12].max() < 0  # hiding the corner raises 'sad'
    assert sad.strongest() == 0.0
    assert happy.probability + sad.probability < 1


def test_the_map_follows_the_models_test_time_augmentation() -> None:
    """Mirrored views read the top-right corner: with TTA, hiding the face's top right changes 'happy' too."""
    face = corner_face()
    (plain,) = occlusion_maps(reader(), face, [0], tta=False)
    (averaged,) = occlusion_maps(reader(tta=True), face, [0])
    assert np.all(plain.drop[:12, -12:] == 0) and np.any(averaged.drop[:12, -12:] != 0)


def test_patches_cover_every_pixel_and_the_last_ones_touch_the_edges() -> None:
    for patch, stride in ((PATCH, 4), (12, 5), (48, 1), (8, 8)):
        origins = _patch_origins(patch, stride)
        covered = np.zeros((48, 48), bool)
        for y, x in origins:
            covered[y:y + patch, x:x + patch] = True
        assert covered.all() and max(x for _, x in origins) == 48 - patch
    assert _patch_origins(1, 48) == [(0, 0), (0, 47), (47, 0), (47, 47)]
    with pytest.raises(ValueError, match="patch must be"):
        occlusion_maps(reader(), corner_face(), patch=49)


def test_the_drawing_is_grey_where_nothing_changes_red_where_hiding_lowers_and_blue_where_it_raises() -> None:
    happy, sad = occlusion_maps(reader(), corner_face(), [0, 1])
    drawn = overlay(happy, side=96).astype(int)
    assert drawn.shape == (96, 96, 3)
    r, g, b = drawn[10, 10]
    assert r > g + 40 and r > b + 40
    assert np.all(drawn[90, 90] == drawn[90, 90, 0])  # grey far from the corner
    r, g, b = overlay(sad, side=96)[10, 10].astype(int)
    assert b > r + 40


def test_a_tiny_change_is_drawn_faintly_not_stretched_to_full_colour() -> None:
    (happy,) = occlusion_maps(reader(), corner_face(), [0])
    weak = type(happy)(happy.face, happy.target, happy.probability, happy.drop * 0.01)
    red, grey = overlay(weak, side=48)[5, 5].astype(int), overlay(weak, side=48)[40, 40].astype(int)
    assert 0 < red[0] - red[2] < 0.2 * (overlay(happy, side=48)[5, 5, 0] - overlay(happy, side=48)[5, 5, 2])
    assert grey[0] == grey[2]
    change = float(np.abs(weak.drop).max())
    assert 0 < change < 0.05
    assert weak.describe() == f"no one part decides it: hiding any one changes happy by {100 * change:.1f} points " \
                              "at most"


def test_saved_maps_name_the_image_the_face_and_its_label(tmp_path: Path, tiny_checkpoint: Path,
                                                           astronaut_jpeg: bytes) -> None:
    from PIL import Image

    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    photo = predictor.predict_image(astronaut_jpeg, "shots/astronaut.jpg")
    twin = predictor.predict_image(astronaut_jpeg, "other/astronaut.png")
    broken = ImagePrediction("bad.jpg", error="not an image")
    saved = save_maps(predictor.loaded, [photo, broken, twin], tmp_path / "maps")
    label = photo.faces[0].label
    assert saved == [[tmp_path / "maps" / f"astronaut-1-face1-{label}.png"], [],
                     [tmp_path / "maps" / f"astronaut-3-face1-{label}.png"]]
    drawn = np.asarray(Image.open(saved[0][0]))
    (occlusion,) = occlusion_maps(predictor.loaded, photo.faces[0].face, [predictor.classes.index(label)])
    np.testing.assert_array_equal(drawn, overlay(occlusion))


def test_every_prediction_keeps_the_face_the_model_read(tiny_checkpoint: Path, astronaut_jpeg: bytes) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    face: FacePrediction = predictor.predict_image(astronaut_jpeg).faces[0]
    assert face.face.shape == (48, 48) and face.face.dtype == np.uint8
    assert np.allclose(predictor.classify(face.face[None])[0], list(face.probabilities.values()), atol=1e-6)
    assert "face" not in face.to_json()
