"""Occlusion maps: where hiding a face's parts changes a class's probability, their drawing, and saving them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fercore.checkpoint import LoadedModel
from fercore.errors import UserError
from fercore.explain import (
    PATCH,
    _distinct_stems,
    _patch_origins,
    explain_faces,
    maps_folder,
    occlusion_maps,
    overlay,
    save_maps,
)
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
    assert happy.strongest() == pytest.approx(float(happy.square_drops.max()))
    assert happy.strongest() >= float(happy.drop.max())
    assert happy.describe() == (f"hiding a red part lowers happy (by up to {100 * happy.strongest():.0f} points), "
                                "hiding a blue part raises it")


def test_a_map_for_another_class_shows_the_opposite_evidence() -> None:
    happy, sad = occlusion_maps(reader(), corner_face(), [0, 1])
    assert sad.target == "sad" and sad.probability < 0.05
    assert sad.drop[:12, :12].max() < 0  # hiding the corner raises 'sad'
    assert sad.strongest() == 0.0
    assert happy.probability + sad.probability < 1
    rise = -float(sad.square_drops.min())
    assert rise >= 0.05 and sad.describe() == (f"nothing here holds up sad: hiding a blue part raises it (by up to "
                                               f"{100 * rise:.0f} points)")


class CentreReader(nn.Module):
    """Says 'happy' the brighter a 4x4 patch at the face's centre is: any square over it hides all of it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, 0, 22:26, 22:26].mean((1, 2))
        return torch.stack([8 * centre, -8 * centre, torch.zeros_like(centre)], 1)


def test_the_caption_gives_what_one_square_does_not_the_mean_over_the_squares_that_hid_a_pixel() -> None:
    model = CentreReader()
    face = np.full((48, 48), 60, np.uint8)
    face[22:26, 22:26] = 255
    (happy,) = occlusion_maps(LoadedModel(model, CLASSES, 0.5, 0.25, 48, False, {}, model, "float32"), face, [0])
    one_square = float(happy.square_drops.max())
    assert one_square > float(happy.drop.max()) + 0.05  # pixels near the patch are also hidden by squares missing it
    assert happy.describe().startswith(f"hiding a red part lowers happy (by up to {100 * one_square:.0f} points)")


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
    weak = type(happy)(happy.face, happy.target, happy.probability, happy.drop * 0.01, happy.square_drops * 0.01)
    red, grey = overlay(weak, side=48)[5, 5].astype(int), overlay(weak, side=48)[40, 40].astype(int)
    assert 0 < red[0] - red[2] < 0.2 * (overlay(happy, side=48)[5, 5, 0] - overlay(happy, side=48)[5, 5, 2])
    assert grey[0] == grey[2]
    change = float(np.abs(weak.square_drops).max())
    assert 0 < change < 0.05
    assert weak.describe() == ("no one part decides it: hiding any one square changes happy by "
                               f"{100 * change:.1f} points at most")


def test_map_files_get_distinct_names_and_a_file_is_no_folder_for_them(tmp_path: Path) -> None:
    assert _distinct_stems(["a/x.jpg", "b/y.png"]) == ["x", "y"]
    assert _distinct_stems(["a.jpg", "a.png", "a-1.jpg"]) == ["a-1-1", "a-2", "a-1"]
    assert _distinct_stems(["a-2.jpg", "a.jpg", "a.png"]) == ["a-2", "a-2-2", "a-3"]
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder for the maps"):
        maps_folder(tmp_path / "taken")
    assert maps_folder(tmp_path / "new") == tmp_path / "new"


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
    ((_, drawing),) = explain_faces(predictor.loaded, [photo.faces[0].crop], [[label]])[0]
    np.testing.assert_array_equal(drawn, drawing)
    (occlusion,) = occlusion_maps(predictor.loaded, photo.faces[0].crop, [predictor.classes.index(label)])
    np.testing.assert_array_equal(drawing, overlay(occlusion))


def test_every_prediction_keeps_the_face_the_model_read(tiny_checkpoint: Path, astronaut_jpeg: bytes) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    face: FacePrediction = predictor.predict_image(astronaut_jpeg).faces[0]
    assert face.crop.shape == (48, 48) and face.crop.dtype == np.uint8
    assert np.allclose(predictor.classify(face.crop[None])[0], list(face.probabilities.values()), atol=1e-6)
    assert "crop" not in face.to_json()
