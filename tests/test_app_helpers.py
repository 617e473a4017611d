"""The app's helpers in fercore.app: settings, launching runs, checkpoints, uploads, grids, outputs."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fercore import paths
from fercore.app import data_views, launcher, model_menu, outputs, settings
from fercore.augment import AugmentConfig
from fercore.config import TrainConfig
from fercore.data import FaceSet
from fercore.data.splits import epoch_steps
from fercore.errors import UserError
from fercore.predict import Predictor
from fercore.runs import RunDir
from fercore.train import run_training


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(paths.RUNS_DIR_ENV, str(tmp_path / "runs"))
    monkeypatch.setenv(settings.DATA_DIR_ENV, str(tmp_path / "data"))
    return tmp_path


def test_settings_come_from_the_environment(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert paths.runs_dir() == folders / "runs" and settings.data_dir() == folders / "data"
    monkeypatch.delenv(paths.RUNS_DIR_ENV)
    assert paths.runs_dir() == settings.PROJECT_ROOT / "runs"
    monkeypatch.chdir(folders)  # relative ones: from where the server started, not where training processes start
    monkeypatch.setenv(paths.RUNS_DIR_ENV, "mine/runs")
    monkeypatch.setenv(settings.DATA_DIR_ENV, "mine/data")
    assert paths.runs_dir() == folders / "mine" / "runs" and settings.data_dir() == folders / "mine" / "data"


def test_ice_servers_default_to_none_and_must_be_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.ICE_SERVERS_ENV, raising=False)
    assert settings.ice_servers() == []
    servers = [{"urls": ["stun:stun.example.org:3478"]}, {"urls": "turn:t.example.org", "username": "u"}]
    monkeypatch.setenv(settings.ICE_SERVERS_ENV, json.dumps(servers))
    assert settings.ice_servers() == servers
    for bad in ("stun:x", '{"urls": "stun:x"}', '[{"url": "stun:x"}]'):
        monkeypatch.setenv(settings.ICE_SERVERS_ENV, bad)
        with pytest.raises(UserError, match=settings.ICE_SERVERS_ENV):
            settings.ice_servers()


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "x" * 81, "white space"])
def test_run_names_cannot_leave_the_runs_folder(folders: Path, name: str) -> None:
    with pytest.raises(UserError):
        launcher.new_run_dir(name)


def test_a_run_name_is_not_reused_unless_its_run_saved_nothing(folders: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert launcher.new_run_dir("fine-1.0_b") == folders / "runs" / "fine-1.0_b"
    (folders / "runs" / "taken").mkdir(parents=True)  # not a run: never taken over
    with pytest.raises(UserError, match="already exists"):
        launcher.new_run_dir("taken")
    done = RunDir(folders / "runs" / "done")
    done.write_config({"arch": "basic"})
    done.file("last.pt").write_bytes(b"saved")
    with pytest.raises(UserError, match="already exists"):
        launcher.new_run_dir("done")
    starting = RunDir(folders / "runs" / "starting")  # launched a moment ago: its process is still importing
    starting.path.mkdir()
    starting.file(launcher.LAUNCH_CONFIG).write_text("{}")
    with pytest.raises(UserError, match="already exists"):
        launcher.new_run_dir("starting")
    old = time.time() - launcher.LAUNCH_GRACE_S - 1  # ... or long ago, and it died without a status
    os.utime(starting.file(launcher.LAUNCH_CONFIG), (old, old))
    assert launcher.new_run_dir("starting") == starting.path  # started again under its name, as the CLI would
    failed = RunDir(folders / "runs" / "failed")
    failed.write_config({"arch": "basic"})
    failed.write_status(state="failed", error="data not found")
    failed.file(launcher.TRAIN_LOG).write_text("fercore: error: data not found\n")
    monkeypatch.setattr(launcher, "_launch", lambda args, run: None)  # the process itself is not the point here
    assert launcher.start_training(TrainConfig(data="synthetic:700"), "failed") == failed
    assert launcher.launch_problem(failed) is None  # the earlier attempt's error is not this one's


def test_an_invalid_recipe_is_refused_before_anything_starts(folders: Path) -> None:
    with pytest.raises(UserError, match="epochs"):
        launcher.start_training(TrainConfig(epochs=0), "bad")
    with pytest.raises(UserError, match="run name"):
        launcher.start_training(TrainConfig(), "../bad")
    assert not (folders / "runs").exists()


def test_a_process_that_dies_before_its_run_starts_is_explained(folders: Path) -> None:
    run = RunDir(folders / "runs" / "early")
    run.path.mkdir(parents=True)
    assert launcher.launch_problem(run) is None
    (run.path / launcher.TRAIN_LOG).write_text("fercore: error: data not found: /nowhere\n")
    assert launcher.launch_problem(run) == "data not found: /nowhere"
    run.write_status(state="starting", pid=1)
    assert launcher.launch_problem(run) is None  # it got going: its status speaks from now on


def test_the_log_tail_reads_the_end_of_a_long_log_only(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(folders / "runs" / "long")
    run.path.mkdir(parents=True)
    run.file(launcher.TRAIN_LOG).write_text("".join(f"\rstep {i}" for i in range(200_000)) + "\nlast line\n")
    monkeypatch.setattr(launcher, "LOG_TAIL_BYTES", 1000)  # of 2.4 MB: about 80 progress lines of 12 bytes
    lines = launcher.log_tail(run, 10_000).splitlines()
    assert lines[-3:] == ["step 199998", "step 199999", "last line"] and 70 < len(lines) < 90


def test_a_resume_that_dies_before_its_run_starts_is_explained(folders: Path) -> None:
    run = RunDir(folders / "runs" / "damaged")
    run.write_status(state="stopped", pid=None)  # the earlier process's status
    run.file("last.pt").write_bytes(b"not a checkpoint")
    assert launcher.continue_training(run) == run
    deadline = time.monotonic() + 60
    while launcher.launch_problem(run) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    error = next(line for line in reversed(launcher.log_tail(run).splitlines()) if line.startswith("fercore: error"))
    assert launcher.launch_problem(run) == error.removeprefix("fercore: error: ")
    assert run.status()["state"] == "stopped"  # the status it kept is older than this launch's error
    run.write_status(state="running", pid=os.getpid())  # a later process got going: its status speaks
    assert launcher.launch_problem(run) is None


def test_resume_needs_a_last_checkpoint(folders: Path) -> None:
    run = RunDir(folders / "runs" / "empty")
    run.write_status(state="stopped")
    with pytest.raises(UserError, match="last.pt"):
        launcher.continue_training(run)


def test_resume_launches_a_process_that_continues_the_run(folders: Path) -> None:
    run = RunDir(folders / "runs" / "stopped")
    cfg = TrainConfig(data="synthetic:700", arch="basic", epochs=2, batch_size=32, threads=1, amp="off")

    def stop_after_epoch_1(record: dict) -> None:
        if record["type"] == "epoch":
            run.request_stop()
    assert run_training(cfg, run.path, on_progress=stop_after_epoch_1)["stopped"]
    assert [e["epoch"] for e in run.epochs()] == [1]
    assert launcher.continue_training(run) == run
    deadline = time.monotonic() + 120
    while run.status()["state"] not in ("finished", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert run.status()["state"] == "finished", launcher.log_tail(run)
    assert [e["epoch"] for e in run.epochs()] == [1, 2]  # epoch 1 kept, epoch 2 trained by the new process
    while "run_dir" not in launcher.log_tail(run) and time.monotonic() < deadline:  # printed after the status
        time.sleep(0.1)
    assert "run_dir" in launcher.log_tail(run)  # the CLI's closing line went to the run's log


def test_resume_chooses_the_thread_count_for_the_box_as_it_is_now(folders: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(folders / "runs" / "stopped")
    run.write_status(state="stopped", pid=None)
    run.file("last.pt").write_bytes(b"")
    launched: list[list[str]] = []
    monkeypatch.setattr(launcher, "_launch", lambda args, _run: launched.append(args))
    monkeypatch.setattr(launcher, "training_threads", lambda: 1)
    launcher.continue_training(run)
    assert launched == [["train", "--resume", str(run.path), "--threads", "1"]]


def test_checkpoint_choices_list_each_runs_best_and_last(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv(paths.RUNS_DIR_ENV, str(tiny_checkpoint.parent.parent))
    monkeypatch.setattr(model_menu, "SHIPPED_CHECKPOINT", tmp_path / "missing.pt")
    choices = model_menu.checkpoint_choices()
    assert [c.path.name for c in choices] == ["best.pt", "last.pt"]
    assert choices[0].label.startswith("tiny · best (val acc ")
    monkeypatch.setattr(model_menu, "SHIPPED_CHECKPOINT", tiny_checkpoint)
    assert model_menu.checkpoint_choices()[0].label == "shipped model (best.pt)"


def test_checkpoint_choices_list_models_shipped_beside_the_shipped_one(tiny_checkpoint: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`ship --out checkpoints/mine/mine.pt` puts a model of one's own where the menu finds it: after the shipped
    model, before the runs; deeper folders are not searched."""
    monkeypatch.setenv(paths.RUNS_DIR_ENV, str(tiny_checkpoint.parent.parent))
    folder = tmp_path / "checkpoints"
    for shipped in ("fer2013.pt", "mine/mine.pt", "other.pt", "deeper/still/deep.pt", "mine/README.md"):
        (folder / shipped).parent.mkdir(parents=True, exist_ok=True)
        (folder / shipped).write_bytes(b"")
    monkeypatch.setattr(model_menu, "SHIPPED_CHECKPOINT", folder / "fer2013.pt")
    choices = model_menu.checkpoint_choices()
    assert [c.label for c in choices[:3]] == ["shipped model (fer2013.pt)", "mine/mine.pt (shipped)",
                                              "other.pt (shipped)"]
    assert choices[1].path == folder / "mine" / "mine.pt"
    assert [c.path.name for c in choices[3:]] == ["best.pt", "last.pt"]


def test_card_rows(tiny_checkpoint: Path) -> None:
    rows = model_menu.card_rows(model_menu.read_card(tiny_checkpoint), tiny_checkpoint)
    epochs = RunDir(tiny_checkpoint.parent).epochs()
    assert rows["Architecture"] == "basic" and rows["Parameters"].endswith(" M")
    assert rows["Classes"] == "angry, disgust, fear, happy, neutral, sad, surprise"
    assert rows["Data"].startswith("synthetic")
    assert rows["Training time"].endswith(f"for {len(epochs)} epoch(s)")


def test_card_rows_prefer_the_measured_card_of_a_shipped_model(tiny_checkpoint: Path) -> None:
    measured = {"description": "Seed design", "best_epoch": 40,
                "validation": {"tta": {"accuracy": 0.7012, "macro_f1": 0.6504}},
                "training": {"seconds": 7260.0, "epochs": 45, "hardware": "Xeon, 1 thread(s), bfloat16"},
                "data": {"train": 25837, "val": 2872}, "data_fingerprint": "c8215fc96c24e6a8"}
    rows = model_menu.card_rows({**model_menu.read_card(tiny_checkpoint), "card": measured}, tiny_checkpoint)
    assert rows["Architecture"] == "basic: Seed design"
    assert rows["Validation accuracy"] == "70.1% (macro F1 0.650, with TTA; best epoch 40)"
    assert rows["Training time"] == "2 h 01 min for 45 epoch(s)"
    assert rows["Trained on"] == "Xeon, 1 thread(s), bfloat16"
    assert rows["Data"].endswith(": 25,837 train / 2,872 validation faces, fingerprint c8215fc96c24e6a8")
    assert "Confidence" not in rows  # a card from before calibration was measured


def test_card_rows_say_how_far_the_confidence_of_a_shipped_model_goes(tiny_checkpoint: Path) -> None:
    from fercore.metrics import calibration

    probs, labels = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]), np.array([0, 1, 1])
    measured = {"description": "Seed design", "validation": {"tta": {"accuracy": 2 / 3, "macro_f1": 0.6}},
                "training": {"seconds": 60.0, "epochs": 1, "hardware": "Xeon"},
                "data": {"train": 10, "val": 3}, "data_fingerprint": "f",
                "temperature": {"value": 0.8, "unscaled": calibration(probs, labels).to_json(),
                                "cross_fitted": calibration(probs ** 1.25, labels).to_json()}}
    rows = model_menu.card_rows({**model_menu.read_card(tiny_checkpoint), "card": measured}, tiny_checkpoint)
    unscaled = 100 * calibration(probs, labels).error
    assert rows["Confidence"].startswith(f"probabilities scaled by temperature 0.80 (fitted on these faces by "
                                         f"log-loss); calibration error {unscaled:.1f} points unscaled, ")


def test_uploads_are_stored_once_under_a_generated_name(folders: Path) -> None:
    first = data_views.store_upload("../../etc/passwd.csv", b"emotion,pixels,Usage\n")
    assert first.parent == folders / "data" and first.name.startswith("upload-") and first.suffix == ".csv"
    assert first.read_bytes() == b"emotion,pixels,Usage\n"
    assert data_views.store_upload("other name.CSV", b"emotion,pixels,Usage\n") == first
    assert data_views.store_upload("archive.zip", b"PK") != first


def test_a_stored_upload_can_be_deleted_unless_a_run_trains_on_it(folders: Path) -> None:
    older = data_views.store_upload("a.csv", b"emotion,pixels\n")
    time.sleep(0.05)
    newer = data_views.store_upload("b.zip", b"PK")
    (folders / "data" / "notes.csv").write_text("mine")  # not an upload: never listed nor deleted
    assert data_views.stored_uploads() == [newer, older]
    with pytest.raises(UserError, match="notes.csv is not a stored upload"):
        data_views.delete_upload(folders / "data" / "notes.csv")
    run = RunDir(paths.runs_dir() / "busy")
    run.write_config({"data": str(older)})
    run.write_status(state="running", pid=os.getpid())  # this test's process stands in for the trainer
    with pytest.raises(UserError, match=f"{older.name} is being trained on by busy: stop the run first"):
        data_views.delete_upload(older)
    run.write_status(state="stopped", pid=None)
    data_views.delete_upload(older)
    assert data_views.stored_uploads() == [newer] and (folders / "data" / "notes.csv").exists()
    launched = RunDir(paths.runs_dir() / "launched")  # started by the app a moment ago: no config.json yet
    launched.path.mkdir()
    launched.file(launcher.LAUNCH_CONFIG).write_text(json.dumps({"data": str(newer)}))
    with pytest.raises(UserError, match="is being trained on by launched"):
        data_views.delete_upload(newer)
    old = time.time() - launcher.LAUNCH_GRACE_S - 1  # its process never reported: it died
    os.utime(launched.file(launcher.LAUNCH_CONFIG), (old, old))
    data_views.delete_upload(newer)
    assert data_views.stored_uploads() == []


def test_uploads_must_be_a_zip_or_csv_within_the_limit(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match=".zip"):
        data_views.store_upload("faces.tar.gz", b"x")
    monkeypatch.setattr(data_views, "MAX_DATA_UPLOAD_MB", 1)
    with pytest.raises(UserError, match="over the limit"):
        data_views.store_upload("big.zip", bytes(1024**2 + 1))
    assert not (folders / "data").exists()


def test_class_samples_and_imbalance() -> None:
    faces = FaceSet(np.arange(10, dtype=np.uint8)[:, None, None].repeat(48, 1).repeat(48, 2),
                    np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1]), ("disgust", "happy"))
    images, labels = data_views.class_samples(faces, per_class=3)
    assert labels == ["disgust", "happy", "happy", "happy"] and images[0, 0, 0] == 0
    grid, shown = data_views.class_grid(faces, per_class=3)
    tile = 48 * 2 + 2  # a face at zoom 2 and the gap after it
    assert shown == ["disgust", "happy"] and grid.shape == (2 * tile - 2, 3 * tile - 2)
    assert grid[0, 0] == 0 and (grid[:96, tile:] == 255).all()  # the one disgust face, then blanks
    assert grid[tile, 0] == images[1, 0, 0] and grid[tile, 2 * tile] == images[3, 0, 0]  # a row of happy ones
    assert data_views.imbalance_warning({"disgust": 1, "happy": 9}).startswith("Imbalanced classes: disgust has 1")
    assert data_views.imbalance_warning({"disgust": 4, "happy": 9}) is None


def test_face_grid_tiles_enlarged_faces() -> None:
    faces = np.stack([np.full((48, 48), v, np.uint8) for v in (0, 100, 200)])
    grid = data_views.face_grid(faces, columns=2, zoom=2, gap=2)
    assert grid.shape == (2 * 96 + 2, 2 * 96 + 2)
    assert grid[0, 0] == 0 and grid[0, 98] == 100 and grid[98, 0] == 200 and grid[98, 98] == 255


def test_training_faces_note_says_whether_validation_faces_were_held_out() -> None:
    assert data_views.training_faces_note(["test", "train", "val"], 0.1, synthetic=False) == (
        "All of the data's train split: its own validation split validates the run, so none are held out.")
    assert data_views.training_faces_note(["test", "train"], 0.1, synthetic=False) == (
        "The data's train split less the 10% held out for validation.")
    assert data_views.training_faces_note(["all"], 0.2, synthetic=False) == (
        "The data's faces less the 20% held out for validation.")
    assert data_views.training_faces_note(["test", "train"], 0.1, synthetic=True).endswith(
        "held out for validation (the synthetic set keeps another 20% as its test split).")


@pytest.mark.parametrize("faces, batch_size, said", [
    (224, 128, "1 step of 128 faces (96 faces left out each epoch, drawn anew each time)"),
    (256, 128, "2 steps of 128 faces"),
    (96, 128, "1 step of 96 faces (a batch of 128 is more than the 96 training faces)"),
    (2520, 64, "39 steps of 64 faces (24 faces left out each epoch, drawn anew each time)"),
])
def test_epoch_note_counts_the_steps_as_the_trainer_runs_them(faces: int, batch_size: int, said: str) -> None:
    assert data_views.epoch_note(faces, batch_size) == said
    steps, batch = epoch_steps(faces, batch_size)
    assert steps * batch <= faces and faces - steps * batch < batch


def test_augmentation_previews() -> None:
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    assert np.array_equal(data_views.augmented(faces, AugmentConfig.off()), faces)
    mirrored = data_views.augmented(faces, data_views.single_augmentation("hflip", 1.0))
    assert np.array_equal(mirrored, faces[:, :, ::-1])
    assert data_views.single_augmentation("rotate", 10).to_dict() == {**AugmentConfig.off().to_dict(), "rotate": 10}
    blended = data_views.augmented(faces, data_views.single_augmentation("mixup", 0.4)).astype(int)
    partner = faces[::-1].astype(int)  # each face's partner: the batch reversed
    assert not np.array_equal(blended, faces)
    assert np.all(blended >= np.minimum(faces, partner) - 1) and np.all(blended <= np.maximum(faces, partner) + 1)


def test_annotate_photo(tiny_checkpoint: Path, astronaut_jpeg: bytes) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    photo = outputs.annotate_photo(predictor, astronaut_jpeg, "astronaut.jpg")
    assert photo.image.shape == (512, 512, 3) and len(photo.prediction.faces) == 1
    assert outputs.png_bytes(photo.image).startswith(b"\x89PNG")
    large = io.BytesIO()
    Image.open(io.BytesIO(astronaut_jpeg)).resize((3200, 2400)).save(large, "JPEG")
    shown = outputs.annotate_photo(predictor, large.getvalue(), "large.jpg")
    assert shown.image.shape == (1200, 1600, 3)  # kept and shown at most 1600 px wide
    download = Image.open(io.BytesIO(outputs.annotated_png(large.getvalue(), shown.prediction)))
    assert download.size == (3200, 2400) and len(shown.prediction.faces) == 1
    bad = outputs.annotate_photo(predictor, b"not an image", "notes.jpg")
    assert bad.image is None and bad.prediction.error


def test_a_jpeg_too_large_to_decode_whole_keeps_its_boxes_in_its_own_pixels(
        tiny_checkpoint: Path, astronaut_jpeg: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fercore.data.images.MAX_IMAGE_PIXELS", 1_000_000)  # the 7.7 MP JPEG: decoded at 1/4
    large = io.BytesIO()
    Image.open(io.BytesIO(astronaut_jpeg)).resize((3200, 2400)).save(large, "JPEG")
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    shown = outputs.annotate_photo(predictor, large.getvalue(), "large.jpg")
    assert shown.image.shape == (600, 800, 3)
    (face,) = shown.prediction.faces
    assert face.box == predictor.predict_image(large.getvalue()).faces[0].box  # as the CLI and the CSV give it
    x, y, w, h = face.box
    assert 900 < x + w / 2 < 1700 and 250 < y + h / 2 < 850  # the astronaut's face, in 3200x2400 pixels
    download = np.asarray(Image.open(io.BytesIO(outputs.annotated_png(large.getvalue(), shown.prediction))))
    assert np.array_equal(download, shown.image)  # drawn where the page shows it, at the decoded scale


def test_faces_csv_has_a_row_per_face_of_every_photo(tiny_checkpoint: Path, astronaut_jpeg: bytes) -> None:
    import csv

    from fercore.predict import ImagePrediction, Predictor

    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    blank = io.BytesIO()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(blank, "PNG")
    photos = [predictor.predict_image(astronaut_jpeg, 'me, "smiling".jpg'),
              predictor.predict_image(blank.getvalue(), "grey.png"), ImagePrediction("notes.jpg", error="not an image")]
    rows = list(csv.DictReader(io.StringIO(outputs.faces_csv(photos, predictor.classes))))
    face = photos[0].faces[0]
    assert [r["image"] for r in rows] == ['me, "smiling".jpg', "grey.png", "notes.jpg"]
    first = rows[0]
    assert [int(first[k]) for k in ("face", "x", "y", "width", "height")] == [1, *face.box]
    assert first["label"] == face.label and float(first["confidence"]) == pytest.approx(face.confidence, abs=1e-5)
    assert [float(first[c]) for c in predictor.classes] == pytest.approx(list(face.probabilities.values()), abs=1e-5)
    assert (first["whole_image"], rows[1]["whole_image"]) == ("0", "1") and rows[1]["label"]
    assert rows[2]["error"] == "not an image" and rows[2]["label"] == "" and rows[2]["happy"] == ""


def test_predictions_csv(tiny_checkpoint: Path) -> None:
    from fercore.evaluate import evaluate

    report = evaluate(tiny_checkpoint, "synthetic:140", "test")
    lines = outputs.predictions_csv(report).splitlines()
    assert lines[0] == "index,true,predicted,trained_on," + ",".join(report.classes)
    assert len(lines) == len(report.labels) + 1
    index, true, predicted, trained_on, *probs = lines[1].split(",")
    assert true == report.classes[report.labels[0]] and predicted == report.classes[report.predictions[0]]
    assert (index, trained_on) == ("0", "0") and sum(map(float, probs)) == pytest.approx(1, abs=1e-3)
    mixed = evaluate(tiny_checkpoint, "synthetic:2100", "all", tta=False)  # its training faces and others
    others = mixed.without_seen()
    rows = [line.split(",") for line in outputs.predictions_csv(others).splitlines()[1:]]
    kept = np.flatnonzero(~mixed.seen)
    assert [int(row[0]) for row in rows] == kept.tolist() and {row[3] for row in rows} == {"0"}  # the split's places
    assert [row[1] for row in rows] == [mixed.classes[mixed.labels[i]] for i in kept]
    assert others.to_json()["left_out_seen"] == mixed.seen_in_training > 0


def test_typed_data_paths_stay_inside_the_allowed_folders(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inside = folders / "data" / "fer2013"
    inside.mkdir(parents=True)
    assert settings.allowed_data_path(str(inside)) == inside.resolve()
    for outside in ("/etc", str(folders / "data" / ".." / "runs"), str(folders / "elsewhere")):
        with pytest.raises(UserError, match="outside the folders this app may read"):
            settings.allowed_data_path(outside)
    (folders / "elsewhere").mkdir()
    monkeypatch.setenv(settings.DATA_ROOTS_ENV, str(folders / "elsewhere"))
    assert settings.allowed_data_path(str(folders / "elsewhere")) == (folders / "elsewhere").resolve()
    assert settings.default_data_source(str(folders / "elsewhere")) == str((folders / "elsewhere").resolve())
    assert settings.default_data_source("/etc") == "synthetic"
    assert settings.default_data_source("synthetic:700") == "synthetic:700"


def test_training_threads_leave_out_the_cores_of_active_runs(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from fercore import hardware

    monkeypatch.setattr(hardware, "usable_cores", lambda: 4)
    assert launcher.training_threads() == 4
    busy = RunDir(folders / "runs" / "busy")
    busy.write_config({"threads": 3})
    busy.write_status(state="running", pid=os.getpid())
    assert launcher.training_threads() == 1
    busy.write_status(state="running", pid=999999999)  # its process is gone: its cores are free again
    assert launcher.training_threads() == 4
    busy.write_config({"threads": 0})  # --threads 0: every core
    busy.write_status(state="running", pid=os.getpid())
    assert launcher.training_threads() == 1


@pytest.mark.parametrize("seconds, said", [(42.4, "42 s"), (65, "1 min 05 s"), (754, "13 min"), (7260, "2 h 01 min")])
def test_durations_read_as_people_say_them(seconds: float, said: str) -> None:
    assert model_menu.duration(seconds) == said


def test_latest_kept_keeps_the_most_recently_used_values() -> None:
    import threading

    from fercore.latest import LatestKept

    kept = LatestKept[int](2)
    kept.put("a", 1)
    kept.put("b", 2)
    assert kept.get("a") == 1  # used: now the newest
    kept.put("c", 3)
    assert (kept.get("a"), kept.get("b"), kept.get("c")) == (1, None, 3)
    failures: list[BaseException] = []

    def use(n: int) -> None:
        try:
            for i in range(2000):
                kept.put(i % 5, n)
                kept.get(i % 3)
        except BaseException as exc:  # an unlocked OrderedDict races into KeyError or RuntimeError here
            failures.append(exc)
    workers = [threading.Thread(target=use, args=(n,)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures and len(kept) == 2


def test_the_servers_settings_match_what_the_pages_promise() -> None:
    import re

    config = (paths.PROJECT_ROOT / ".streamlit" / "config.toml").read_text()  # tomllib is 3.11+: two lines read

    def setting(name: str) -> str:
        return re.search(rf"^{name}\s*=\s*\"?([^\"\s]+)", config, re.MULTILINE).group(1)
    assert setting("address") == "127.0.0.1"  # local only, unless the user says otherwise
    assert int(setting("maxUploadSize")) == data_views.MAX_DATA_UPLOAD_MB  # the data uploader's cap is the server's
    assert int(setting("maxUploadSize")) > outputs.MAX_IMAGE_UPLOAD_MB


def test_a_home_folder_of_no_user_is_a_one_line_error(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fercore import paths
    from fercore.data import load_data

    for typed in ("~no-such-user-here/fer2013", "~no-such-user-here"):
        with pytest.raises(UserError, match="no such user's home folder"):
            settings.allowed_data_path(typed)
        with pytest.raises(UserError, match="no such user's home folder"):
            load_data(typed)
    assert settings.default_data_source("~no-such-user-here/fer2013") == "synthetic"
    monkeypatch.setenv(paths.RUNS_DIR_ENV, "~no-such-user-here/runs")
    with pytest.raises(UserError, match="~no-such-user-here/runs: no such user's home folder"):
        paths.runs_dir()
