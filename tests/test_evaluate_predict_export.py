"""Evaluation numbers against scikit-learn, prediction on a real photo, export parity."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import jpeg_bytes, write_image_tree
from PIL import Image, ImageOps
from sklearn.metrics import f1_score

from fercore.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from fercore.data import FaceSet
from fercore.data.images import ImageError, open_photo
from fercore.draw import annotate
from fercore.evaluate import EvalReport, evaluate
from fercore.export import export
from fercore.inference import predict_proba, to_input, tta_views
from fercore.predict import Predictor, predict_files


def test_report_matches_a_known_case() -> None:
    classes = ("angry", "happy", "sad")
    labels = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 2, 2])
    probs = np.eye(3)[predicted] * 0.8 + 0.2 / 3
    report = EvalReport(classes, labels, probs, FaceSet(np.zeros((6, 48, 48), np.uint8), labels, classes), False)
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.macro_f1 == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert report.confusion().tolist() == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    happy = report.per_class()["happy"]
    assert happy == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert [m["index"] for m in report.mistakes()] == [1, 4]
    assert [m["index"] for m in report.mistakes(true="happy")] == [4]
    assert [m["index"] for m in report.mistakes(predicted="happy")] == [1]
    assert report.mistakes(true="angry", predicted="sad") == [] and report.mistakes(true="sad") == []
    counts = [report.count_mistakes(), report.count_mistakes("happy"), report.count_mistakes(predicted="sad")]
    assert counts == [2, 1, 1]
    out = report.to_json()
    assert out["n"] == 6 and out["classes"] == list(classes) and out["confusion"][0] == [1, 1, 0]


def test_evaluate_reports_its_progress(tiny_checkpoint: Path) -> None:
    calls: list[tuple[int, int]] = []
    report = evaluate(tiny_checkpoint, "synthetic:700", "test", on_progress=lambda done, n: calls.append((done, n)))
    faces = len(report.labels)
    assert len(calls) == -(-faces // 16) and calls[-1] == (faces, faces)  # a pass of 16 faces (x4 views) each
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})


def test_evaluate_uses_tta_default_and_override(tiny_checkpoint: Path) -> None:
    with_default = evaluate(tiny_checkpoint, "synthetic:2100", "test")
    assert with_default.tta is True  # the tiny model keeps the checkpoint default
    plain = evaluate(tiny_checkpoint, "synthetic:2100", "test", tta=False)
    assert plain.tta is False and not np.allclose(plain.probabilities, with_default.probabilities)
    assert plain.per_class()["happy"]["support"] == 60


def test_photo_with_a_face_gets_one_boxed_prediction(tiny_checkpoint: Path, astronaut_jpeg: bytes) -> None:
    result = Predictor.from_checkpoint(tiny_checkpoint).predict_image(astronaut_jpeg, "astronaut.jpg")
    assert result.error is None and not result.no_face_found and len(result.faces) == 1
    face = result.faces[0]
    x, y, w, h = face.box
    assert 150 < x + w / 2 < 260 and 60 < y + h / 2 < 170 and w == h  # the astronaut's face, FER-style square
    assert sum(face.probabilities.values()) == pytest.approx(1, abs=1e-4)
    assert face.label == max(face.probabilities, key=face.probabilities.get)


def test_a_16_bit_photo_is_read_like_its_8_bit_original(tiny_checkpoint: Path, astronaut_jpeg: bytes) -> None:
    gray = ImageOps.autocontrast(Image.open(io.BytesIO(astronaut_jpeg)).convert("L"))  # spans 0..255
    eight, sixteen = io.BytesIO(), io.BytesIO()
    gray.save(eight, "PNG")
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(sixteen, "PNG")  # 0..65535, mode I;16
    assert Image.open(io.BytesIO(sixteen.getvalue())).mode.startswith("I")
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    expected, got = (predictor.predict_image(b.getvalue()) for b in (eight, sixteen))
    assert not got.no_face_found and [f.box for f in got.faces] == [f.box for f in expected.faces]
    assert got.faces[0].probabilities == pytest.approx(expected.faces[0].probabilities, abs=1e-6)


def test_evaluating_on_data_without_some_classes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = write_image_tree(tmp_path / "mine", per_class=2, splits=("test",))
    for emotion in ("angry", "disgust", "fear", "neutral", "surprise"):
        for image in (data / "test" / emotion).iterdir():
            image.unlink()
        (data / "test" / emotion).rmdir()
    report = evaluate(tiny_checkpoint, data, "test")
    assert len(report.labels) == 4 and report.per_class()["angry"]["support"] == 0
    assert report.absent_note().startswith("no angry, disgust, fear, neutral, surprise faces here")
    assert evaluate(tiny_checkpoint, "synthetic:700", "test").absent_note() == ""


def test_photo_without_a_face_offers_the_whole_image(tiny_checkpoint: Path) -> None:
    blank = io.BytesIO()
    Image.new("RGB", (300, 200), (90, 90, 90)).save(blank, "PNG")
    result = Predictor.from_checkpoint(tiny_checkpoint).predict_image(blank.getvalue())
    assert result.no_face_found and result.faces[0].box == (0, 0, 300, 200)


@pytest.mark.parametrize("limit", [None, 1_000_000])  # 1 MP: the 4.2 MP JPEG is decoded at a quarter scale
def test_big_exif_rotated_photo_boxes_are_in_original_pixels(tiny_checkpoint: Path, astronaut_jpeg: bytes,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             limit: int | None) -> None:
    if limit:
        monkeypatch.setattr("fercore.data.images.MAX_IMAGE_PIXELS", limit)
        opened, reduction = open_photo(jpeg_bytes(np.zeros((2048, 2048), np.uint8)))
        assert reduction == 4 and opened.size == (512, 512)
        blank = io.BytesIO()
        Image.new("L", (2048, 2048)).save(blank, "PNG")  # only JPEG decodes at a reduced scale
        with pytest.raises(ImageError, match="over the limit of 1,000,000"):
            open_photo(blank.getvalue())
    big = Image.open(io.BytesIO(astronaut_jpeg)).resize((2048, 2048))
    stored = big.transpose(Image.Transpose.ROTATE_90)  # stored on its side, as a camera held upright writes it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to display
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif)
    face = Predictor.from_checkpoint(tiny_checkpoint).predict_image(buffer.getvalue()).faces[0]
    x, y, w, h = face.box  # in the upright photo's pixels: 4x the 512-pixel location
    assert 600 < x + w / 2 < 1040 and 240 < y + h / 2 < 680


def test_one_bad_file_does_not_stop_the_batch(tiny_checkpoint: Path, astronaut_jpeg: bytes, tmp_path: Path) -> None:
    (tmp_path / "good.jpg").write_bytes(astronaut_jpeg)
    (tmp_path / "bad.jpg").write_text("not an image")
    results = predict_files(Predictor.from_checkpoint(tiny_checkpoint),
                            [tmp_path / "bad.jpg", tmp_path / "good.jpg", tmp_path / "missing.png"])
    assert [r.error is None for r in results] == [False, True, False]
    assert "not an image" in results[0].error and results[2].error == "file not found"


def test_a_folder_stands_for_the_images_directly_in_it(tiny_checkpoint: Path, astronaut_jpeg: bytes,
                                                        tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "deeper").mkdir(parents=True)
    for name in ("b.JPG", "a.jpg", "deeper/c.jpg"):
        (photos / name).write_bytes(astronaut_jpeg)
    (photos / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    results = predict_files(Predictor.from_checkpoint(tiny_checkpoint), [photos, tmp_path / "empty"])
    assert [Path(r.image).name for r in results] == ["a.jpg", "b.JPG", "empty"]
    assert results[0].faces and results[1].faces and results[0].error is None
    assert results[2].error.startswith("a folder with no images in it (.bmp, .gif, .jpeg, .jpg,")


def test_an_unreadable_file_does_not_stop_the_batch(tiny_checkpoint: Path, astronaut_jpeg: bytes, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("locked.jpg", "good.jpg"):
        (tmp_path / name).write_bytes(astronaut_jpeg)
    read_bytes = Path.read_bytes

    def refuse_locked(path: Path) -> bytes:  # root reads any mode bits: refuse the way a locked file does
        if path.name == "locked.jpg":
            raise PermissionError(13, "Permission denied")
        return read_bytes(path)
    monkeypatch.setattr(Path, "read_bytes", refuse_locked)
    paths = [tmp_path / "locked.jpg", tmp_path / "good.jpg"]
    results = predict_files(Predictor.from_checkpoint(tiny_checkpoint), paths)
    assert results[0].error == "cannot read: Permission denied" and results[1].error is None and results[1].faces


def test_annotate_draws_in_the_emotion_colour(tiny_checkpoint: Path, astronaut_jpeg: bytes) -> None:
    rgb = np.asarray(Image.open(io.BytesIO(astronaut_jpeg)).convert("RGB"))
    faces = Predictor.from_checkpoint(tiny_checkpoint).predict_array(rgb)
    out = annotate(rgb, faces)
    assert out.shape == rgb.shape and not np.array_equal(out, rgb)
    x, y, w, h = faces[0].box
    from fercore.labels import COLORS
    expected = tuple(int(COLORS[faces[0].label][i:i + 2], 16) for i in (1, 3, 5))
    assert tuple(out[y + h // 2, x]) == expected


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_gives_the_checkpoint_probabilities(tiny_checkpoint: Path, tmp_path: Path, fmt: str,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    out, interface = export(tiny_checkpoint, fmt, tmp_path / f"model.{fmt}")
    assert interface["output"] == "probabilities [N,7]" and interface["classes"][0] == "angry"
    assert capfd.readouterr().err == ""  # the exporter's own warnings are not the user's business
    faces = np.random.default_rng(0).integers(0, 255, (5, 48, 48), dtype=np.uint8)
    loaded = load_model(tiny_checkpoint, precision="float")
    expected = predict_proba(loaded.model, faces, loaded.mean, loaded.std, amp=False).numpy()  # float32
    x = faces[:, None].astype(np.float32)
    if fmt == "onnx":
        got = ort.InferenceSession(str(out)).run(None, {"faces": x})[0]
    else:
        got = torch.jit.load(str(out))(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))


def test_export_gives_the_probabilities_at_the_checkpoints_temperature(tiny_checkpoint: Path,
                                                                        tmp_path: Path) -> None:
    from fercore.checkpoint import TEMPERATURE, read_checkpoint, save_checkpoint
    from fercore.temperature import sharpen

    scaled = tmp_path / "scaled.pt"  # an export is one view: it takes the one-view temperature
    save_checkpoint(scaled, {**read_checkpoint(tiny_checkpoint), TEMPERATURE: {"tta": 2.0, "one_view": 0.5}})
    out, _ = export(scaled, "torchscript", tmp_path / "model.pt")
    faces = np.random.default_rng(1).integers(0, 255, (5, 48, 48), dtype=np.uint8)
    loaded = load_model(tiny_checkpoint, precision="float")
    unscaled = predict_proba(loaded.model, faces, loaded.mean, loaded.std, amp=False).numpy()
    got = torch.jit.load(str(out))(torch.from_numpy(faces[:, None].astype(np.float32))).detach().numpy()
    np.testing.assert_allclose(got, sharpen(unscaled, 0.5), atol=1e-5)
    in_fercore = load_model(scaled, precision="float").proba(faces, tta=False)  # bf16 autocast where the CPU has it
    np.testing.assert_allclose(in_fercore, got, atol=2e-2)  # bf16's error, doubled by the temperature (5e-3 on AMD)
    assert np.abs(in_fercore - unscaled).max() > 0.1  # far nearer the export's than the unscaled probabilities
    report, plain = evaluate(scaled, "synthetic:140", "test"), evaluate(tiny_checkpoint, "synthetic:140", "test")
    assert (report.temperature, plain.temperature, report.to_json()["temperature"]) == (2.0, 1.0, 2.0)  # TTA's
    assert evaluate(scaled, "synthetic:140", "test", tta=False).temperature == 0.5
    assert report.scaling_note().startswith("probabilities scaled by the model's temperature 2, fitted on")
    assert plain.scaling_note() == "" and report.accuracy == plain.accuracy


def test_checkpoint_errors_are_clear(tmp_path: Path, tiny_checkpoint: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"format": "fercore-checkpoint", "x": Evil()}))
    with pytest.raises(CheckpointError, match="not a fercore checkpoint|not a readable"):
        read_checkpoint(tmp_path / "evil.pt")
    torch.save({"format": "fercore-checkpoint", "x": Evil()}, tmp_path / "evil2.pt")
    with pytest.raises(CheckpointError, match="evil2.pt is not a fercore checkpoint: it holds objects other than"):
        read_checkpoint(tmp_path / "evil2.pt")
    assert not (tmp_path / "pwned").exists()

    whole = tiny_checkpoint.read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="truncated or another format"):
        read_checkpoint(tmp_path / "cut.pt")

    torch.save({"model": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no 'fercore-checkpoint' format tag"):
        read_checkpoint(tmp_path / "other.pt")

    data = read_checkpoint(tiny_checkpoint)
    for damage, named in [({"state_dict": None}, "state_dict"), ({"preprocessing": {"size": 48}}, "preprocessing"),
                          ({"classes": [], "arch": 3}, "arch, classes")]:
        save_checkpoint(tmp_path / "damaged.pt", {**data, **damage})
        with pytest.raises(CheckpointError, match=f"^damaged.pt is a damaged fercore checkpoint: {named} missing"):
            read_checkpoint(tmp_path / "damaged.pt")
    save_checkpoint(tmp_path / "damaged.pt", {**data, "version": "2"})
    with pytest.raises(CheckpointError, match="its version is '2'"):
        read_checkpoint(tmp_path / "damaged.pt")
    save_checkpoint(tmp_path / "wrong.pt", {**data, "arch": "vgg"})
    with pytest.raises(CheckpointError, match="do not match architecture 'vgg'"):
        load_model(tmp_path / "wrong.pt")
    save_checkpoint(tmp_path / "fewer.pt", {**data, "classes": ["angry", "happy"]})
    with pytest.raises(CheckpointError, match="with 2 classes"):
        load_model(tmp_path / "fewer.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nothing.pt")
    from_run = read_checkpoint(tiny_checkpoint.parent)  # a run directory stands for its best.pt
    assert from_run["metrics"] == read_checkpoint(tiny_checkpoint)["metrics"]
    with pytest.raises(CheckpointError, match="is a directory without a best.pt"):
        read_checkpoint(tmp_path)


def test_tta_averages_the_face_its_zoom_and_their_mirrors() -> None:
    ramp = torch.arange(48.0).expand(48, 48)  # value = column
    x = torch.stack([ramp, ramp.T, ramp * 0 + 1]).unsqueeze(1)
    views = tta_views(x)
    assert views.shape == (12, 1, 48, 48)
    torch.testing.assert_close(views[:3], x)
    torch.testing.assert_close(views[6:9], x.flip(-1))
    zoomed = views[3:6]
    column = torch.arange(48.0)
    source = (column - 23.5) / 1.1 + 23.5  # enlarged by 10% about the centre: pixel j shows the source there
    torch.testing.assert_close(zoomed[0, 0, 10], source)
    torch.testing.assert_close(zoomed[1, 0, :, 10], source)
    torch.testing.assert_close(views[9:12], zoomed.flip(-1))

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 7)).eval()
    faces = torch.randint(0, 256, (5, 48, 48), dtype=torch.uint8)
    inputs = tta_views(to_input(faces, 0.5, 0.25))
    with torch.no_grad():
        expected = model(inputs).softmax(1).view(4, 5, 7).mean(0)
    torch.testing.assert_close(predict_proba(model, faces, 0.5, 0.25, tta=True, amp=False), expected)
    assert predict_proba(model, faces[:0], 0.5, 0.25, tta=True, amp=False).shape == (0, 7)  # argmax(1) works
