"""The Streamlit app through AppTest: every page without data, a training run started from the Train page,
Evaluate's numbers against the engine's, and Predict on a photo and on a file that is not one."""
from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import streamlit_webrtc
from conftest import write_image_tree
from PIL import Image
from streamlit.testing.v1 import AppTest

from fercore import paths
from fercore.app import launcher, model_menu, settings
from fercore.augment import AugmentConfig
from fercore.checkpoint import read_checkpoint
from fercore.compare import compare
from fercore.config import TrainConfig, preset
from fercore.evaluate import evaluate
from fercore.explain import occlusion_maps
from fercore.predict import Predictor
from fercore.runs import ACTIVE_STATES, RunDir
from fercore.train import run_training

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
PAGES = ("pages/home.py", "pages/train.py", "pages/evaluate.py", "pages/predict.py")

OpenPage = Callable[[str], AppTest]


@pytest.fixture
def webrtc_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The arguments of each webrtc_streamer call (the real one needs a browser and a running server)."""
    calls: list[dict] = []

    def record(**kwargs: object) -> SimpleNamespace:
        calls.append(kwargs)
        return SimpleNamespace(state=SimpleNamespace(playing=False))  # a stream that has not started
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", record)
    return calls


@pytest.fixture
def open_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webrtc_calls: list[dict]) -> OpenPage:
    """Open a page of the app with empty runs and data folders and no shipped model (tests may change that)."""
    monkeypatch.setenv(paths.RUNS_DIR_ENV, str(tmp_path / "runs"))
    monkeypatch.setenv(settings.DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setattr(model_menu, "SHIPPED_CHECKPOINT", tmp_path / "checkpoints" / "fer2013.pt")

    def open_(page: str) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        at.switch_page(page).run()
        assert not at.exception, at.exception
        return at
    return open_


@pytest.fixture
def with_tiny_run(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The runs folder holds the tiny trained run; returns its best.pt."""
    monkeypatch.setenv(paths.RUNS_DIR_ENV, str(tiny_checkpoint.parent.parent))
    return tiny_checkpoint


def chart_specs(at: AppTest) -> list[dict]:
    """The Plotly figures on the page, as their JSON specs."""
    return [json.loads(e.proto.spec) for e in at.main.get("plotly_chart")]


def wait_until_finished(run: RunDir, timeout_s: float = 180) -> None:
    """Wait for a run the page launched to end, and check that it finished (its log tail if not)."""
    deadline = time.monotonic() + timeout_s
    while run.status().get("state") in (None, *ACTIVE_STATES) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run.status()["state"] == "finished", launcher.log_tail(run)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_loads_with_no_data(open_page: OpenPage, page: str) -> None:
    at = open_page(page)
    assert at.title[0].value
    assert not at.error


def test_the_home_page_starts_without_torch(tmp_path: Path) -> None:
    """Only reading a model card needs torch (imported then): the rest of the home page stays light."""
    script = ("import sys; from pathlib import Path; from streamlit.testing.v1 import AppTest; "
              "import fercore.app.model_menu as menu; menu.SHIPPED_CHECKPOINT = Path('/nowhere/fer2013.pt'); "
              f"at = AppTest.from_file({str(APP)!r}, default_timeout=30).run(); "
              "assert not at.exception, at.exception; print(sorted(m for m in sys.modules if m.startswith('torch')))")
    env = {**os.environ, paths.RUNS_DIR_ENV: str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_app_refuses_to_run_when_its_server_has_no_address(tmp_path: Path) -> None:
    """AppTest, run from another folder, reads no .streamlit/config.toml: no address, so every network interface."""
    script = ("from streamlit.testing.v1 import AppTest; "
              f"at = AppTest.from_file({str(APP)!r}, default_timeout=30).run(); "
              "assert not at.exception, at.exception; print([e.value for e in at.error], len(at.title))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(APP.parent)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "listens on every network interface" in result.stdout and result.stdout.strip().endswith("] 0"), \
        result.stdout


def test_home_says_the_shipped_model_is_missing(open_page: OpenPage) -> None:
    at = open_page("pages/home.py")
    assert any("fer2013.pt is missing: restore it from the repository (`git checkout -- checkpoints/fer2013.pt`)"
               in w.value for w in at.warning)
    assert [link.label for link in at.main.get("page_link")] == [
        "Train a model", "Evaluate a checkpoint", "Predict on photos or webcam"]


def test_home_shows_the_shipped_model_card_and_the_runs(open_page: OpenPage, with_tiny_run: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_menu, "SHIPPED_CHECKPOINT", with_tiny_run)
    at = open_page("pages/home.py")
    card = at.markdown[1].value
    assert "| Architecture | basic |" in card and "Validation accuracy" in card and "Training time" in card
    assert at.dataframe[0].value["name"].tolist() == [with_tiny_run.parent.name]


def test_the_runs_table_shows_blanks_one_decimal_of_accuracy_and_training_time(open_page: OpenPage,
                                                                               tmp_path: Path) -> None:
    run = RunDir(tmp_path / "runs" / "20261206-110614-fernet")
    run.write_config(TrainConfig(data="synthetic:300", epochs=3).to_dict())
    run.log({"type": "epoch", "epoch": 1, "train_loss": 1.9, "train_acc": 0.13, "val_loss": 1.9, "val_acc": 0.1429,
             "val_macro_f1": 0.1, "lr": 0.01, "seconds": 4.2, "images_per_s": 27.0})
    run.write_status(state="stopped", epoch=2, total_epochs=3, best_val_acc=0.1429)
    at = open_page("pages/home.py")
    table = at.dataframe[0]
    row = table.value.iloc[0]
    assert (row["best_val_acc"], row["training"]) == (pytest.approx(14.29), "4 s")
    config = json.loads(table.proto.columns)
    assert config["best_val_acc"]["type_config"]["format"] == "%.1f%%"  # 14.3%, as 12.5% reads 12.5%
    assert table.proto.placeholder == "–"  # not "None" where a run has no error
    assert config["name"]["width"] == "medium" and config["error"]["width"] == "large"


def test_train_page_starts_a_run_that_finishes(open_page: OpenPage) -> None:
    at = open_page("pages/train.py")
    at.number_input(key="train-synthetic").set_value(700)
    at.number_input(key="demo-epochs").set_value(1)
    at.text_input(key="run-name").input("first")
    at.slider(key="demo-cutmix").set_value(0.5)
    at.run()
    estimate = next(c.value for c in at.caption if "per epoch** on this machine" in c.value)
    assert "steps of 64 faces" in estimate  # the demo preset's batch, timed with the run's thread count
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception and not at.error
    assert at.session_state["train-tab"] == "Live" and at.selectbox[0].value.name == "first"
    run = RunDir(paths.runs_dir() / "first")
    launched = json.loads((run.path / launcher.LAUNCH_CONFIG).read_text())
    assert (launched["data"], launched["augment"]["cutmix"]) == ("synthetic:700", 0.5)
    wait_until_finished(run)
    assert run.config()["threads"] == launcher.training_threads()
    assert run.summary()["epochs"] == "1/1"

    at.run()
    assert at.progress[0].text.startswith("**finished** · 1/1 epochs done")
    assert [spec["layout"]["annotations"][0]["text"] for spec in chart_specs(at)] == ["loss"]
    at.session_state["train-tab"] = "Runs"
    at.run()
    assert at.dataframe[0].value.set_index("name").loc["first", "state"] == "finished"


def test_train_page_times_no_step_beside_a_training_run_and_says_when_it_cannot(
        open_page: OpenPage, monkeypatch: pytest.MonkeyPatch) -> None:
    import fercore.train

    def out_of_memory(*args: object, **kwargs: object) -> float:
        raise RuntimeError("DefaultCPUAllocator: not enough memory\nmore detail")
    monkeypatch.setattr(fercore.train, "measure_step_seconds", out_of_memory)
    at = open_page("pages/train.py")
    at.number_input(key="demo-batch").set_value(2047).run()
    assert not at.exception
    assert any(c.value == "Could not time a training step here (DefaultCPUAllocator: not enough memory)."
               for c in at.caption)
    busy = RunDir(paths.runs_dir() / "busy")
    busy.write_config({"arch": "basic", "epochs": 3, "threads": 1})
    busy.write_status(state="running", pid=os.getpid())  # this test's process stands in for the trainer
    at.run()
    assert [w.value for w in at.warning][-1].startswith("Already training: busy.")
    assert not any("per epoch** on this machine" in c.value or "Could not time" in c.value for c in at.caption)


def test_train_page_trains_a_wider_network(open_page: OpenPage) -> None:
    at = open_page("pages/train.py")
    at.number_input(key="train-synthetic").set_value(300)
    at.number_input(key="demo-epochs").set_value(1)
    at.text_input(key="run-name").input("wide")
    width = at.selectbox(key="demo-width-basic")
    assert width.value == 1.0 and "1.5x (" in width.format_func(1.5)
    width.set_value(1.5).run()
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception and not at.error
    run = RunDir(paths.runs_dir() / "wide")
    wait_until_finished(run)
    assert run.config()["arch_args"] == {"widths": [48, 96, 192, 384]}  # the basic network's 32-256, times 1.5


def test_the_width_menu_counts_the_parameters_of_the_architecture_chosen(open_page: OpenPage) -> None:
    at = open_page("pages/train.py")
    at.selectbox(key="demo-width-basic").set_value(2.0).run()
    at.selectbox(key="demo-arch").set_value("vgg").run()
    width = at.selectbox(key="demo-width-vgg")  # a widget per architecture: its shown label is redrawn
    assert width.value == 1.0 and width.format_func(1.0) == "1x (9.94 M parameters)"


def test_a_run_stopped_within_an_epoch_shows_where_it_saved(open_page: OpenPage, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "runs" / "halfway")
    run.write_config(TrainConfig(data="synthetic:300", epochs=3).to_dict())
    run.log({"type": "epoch", "epoch": 1, "train_loss": 1.5, "train_acc": 0.4, "val_loss": 1.4, "val_acc": 0.45,
             "val_macro_f1": 0.4, "lr": 0.01, "seconds": 10.0, "images_per_s": 27.0})
    run.write_status(state="stopped", epoch=2, step=5, steps=10, total_epochs=3, best_val_acc=0.45)
    at = open_page("pages/train.py")
    at.session_state["train-tab"] = "Live"
    at.run()
    assert not at.exception
    assert at.progress[0].text.startswith("**stopped** · 1/3 epochs done · saved at step 5/10 of epoch 2")
    assert at.progress[0].value == 50  # 1.5 of 3 epochs


def test_a_starting_run_shows_how_far_its_teachers_pass_is(open_page: OpenPage, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "runs" / "distilling")
    run.write_config(TrainConfig(data="synthetic:300", epochs=3, teachers=["t.pt"]).to_dict())
    run.write_status(state="starting", pid=os.getpid(), epoch=0, total_epochs=3,  # this process stands in
                     startup={"phase": "teachers", "done": 12800, "total": 51678, "eta_s": 420.0})
    at = open_page("pages/train.py")
    at.session_state["train-tab"] = "Live"
    at.run()
    assert not at.exception
    assert at.progress[0].text == "**starting** · the teachers' predictions: 12,800 of 51,678 faces (25%) · ETA 7 min"
    run.write_status(startup=None)
    at.run()
    assert at.progress[0].text == "**starting** · reading the data and building the model"


def test_a_deleted_run_leaves_nothing_chosen_to_delete_next(open_page: OpenPage, tmp_path: Path) -> None:
    for name in ("first", "second"):
        run_training(TrainConfig(data="synthetic:300", arch="basic", epochs=1, batch_size=32, threads=1),
                     tmp_path / "runs" / name)
    at = open_page("pages/train.py")
    at.session_state["train-tab"] = "Runs"
    at.run()
    assert at.selectbox(key="doomed").value is None
    at.selectbox(key="doomed").set_value("first").run()
    next(b for b in at.button if b.key == "delete").click().run()
    assert not at.exception and not (tmp_path / "runs" / "first").exists()
    assert at.selectbox(key="doomed").value is None and at.selectbox(key="doomed").options == ["second"]
    assert [t.value for t in at.toast] == ["Deleted first"]


def test_train_page_reports_a_runs_folder_it_cannot_write_in_one_line(open_page: OpenPage, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv(paths.RUNS_DIR_ENV, str(tmp_path / "a-file" / "runs"))
    at = open_page("pages/train.py")
    at.number_input(key="train-synthetic").set_value(700)
    at.text_input(key="run-name").input("first")
    at.run()
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"[Errno 20] Not a directory: '{tmp_path / 'a-file' / 'runs' / 'first'}'"]


def test_train_page_continues_a_trained_model(open_page: OpenPage, tiny_checkpoint: Path) -> None:
    shutil.copytree(tiny_checkpoint.parent, paths.runs_dir() / "tiny")
    start = paths.runs_dir() / "tiny" / "best.pt"
    at = open_page("pages/train.py")
    picker = at.selectbox(key="warm-start")
    assert picker.options[0] == "random weights (from scratch)"
    tiny = next(i for i, o in enumerate(picker.options) if o.startswith("tiny · best"))
    assert picker.options[tiny].endswith(": basic (continue training it)")
    picker.select_index(tiny).run()
    arch = at.selectbox(key="demo-arch-of-start")
    assert arch.disabled and arch.value == "basic"
    at.number_input(key="train-synthetic").set_value(700)
    at.number_input(key="demo-epochs").set_value(1)
    at.number_input(key="demo-swa").set_value(1)  # and keep the weights' average (of the one epoch here)
    at.text_input(key="run-name").input("continued")
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception and not at.error
    run = RunDir(paths.runs_dir() / "continued")
    wait_until_finished(run)
    assert run.config()["init_from"] == str(start) and run.config()["swa_epochs"] == 1
    assert run.epochs()[0]["averaged_epochs"] == 1
    assert [r.name for r in run.lineage()] == ["tiny", "continued"]


def test_start_from_shows_random_weights_after_a_look_at_another_data_source(open_page: OpenPage) -> None:
    at = open_page("pages/train.py")
    at.radio(key="train-kind").set_value("upload").run()  # no data: the picker is not drawn
    at.radio(key="train-kind").set_value("synthetic").run()
    picker = at.selectbox(key="warm-start")
    assert picker.value is not None and picker.format_func(picker.value) == "random weights (from scratch)"
    assert picker.index == 0


def test_a_warm_start_shows_its_own_parameter_count(open_page: OpenPage) -> None:
    uneven = {"widths": [8, 20, 32, 64]}  # no multiple of the basic network's 32-64-128-256
    run_training(TrainConfig(data="synthetic:700", arch="basic", arch_args=uneven, epochs=1, batch_size=64,
                             threads=1, augment=AugmentConfig.off()), paths.runs_dir() / "uneven")
    at = open_page("pages/train.py")
    picker = at.selectbox(key="warm-start")
    picker.select_index(next(i for i, o in enumerate(picker.options) if o.startswith("uneven · best"))).run()
    count = read_checkpoint(paths.runs_dir() / "uneven" / "best.pt")["parameters"]
    for menu in ("demo-arch-of-start", "demo-width-of-start"):
        shown = at.selectbox(key=menu)
        assert f"({count / 1e6:.2f} M parameters)" in shown.format_func(shown.value), menu


def test_train_page_distils_from_a_trained_model_of_the_same_data(open_page: OpenPage, tiny_checkpoint: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import fercore.train

    timed: list[tuple] = []

    def step_seconds(*args: object, teachers: tuple = ()) -> float:
        timed.append(tuple(teachers))
        return 0.5
    monkeypatch.setattr(fercore.train, "measure_step_seconds", step_seconds)
    shutil.copytree(tiny_checkpoint.parent, paths.runs_dir() / "tiny")
    teacher = paths.runs_dir() / "tiny" / "best.pt"
    at = open_page("pages/train.py")
    at.number_input(key="train-synthetic").set_value(700).run()
    assert not at.multiselect and any("to learn from" in c.value for c in at.caption)  # other data: no teachers
    at.number_input(key="train-synthetic").set_value(2100).run()  # the data the tiny model learned
    teachers = at.multiselect(key="teachers")
    assert [o for o in teachers.options if o.startswith("tiny · best")]
    teachers.select(next(o for o in teachers.options if o.startswith("tiny · best"))).run()
    at.slider(key="demo-distill").set_value(0.8)
    assert at.radio(key="demo-teaching").value == "fixed"
    at.radio(key="demo-teaching").set_value("live").run()
    assert timed[-1] == (("basic", {}),)  # the step timed with the live teacher's network
    assert any("the live teachers included" in c.value for c in at.caption)
    at.number_input(key="demo-epochs").set_value(1)
    at.text_input(key="run-name").input("distilled")
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception and not at.error
    run = RunDir(paths.runs_dir() / "distilled")
    wait_until_finished(run)
    config = run.config()
    assert (config["teachers"], config["distill"], config["teaching"]) == ([str(teacher)], 0.8, "live")
    assert not run.file("teacher_targets.pt").exists()


def test_train_page_offers_fer2013_data_the_distill_presets_weight(open_page: OpenPage, tmp_path: Path) -> None:
    data = write_image_tree(tmp_path / "data" / "fer", per_class=10)
    run_training(TrainConfig(data=str(data), arch="basic", epochs=1, batch_size=32, threads=1,
                             augment=AugmentConfig.off()), paths.runs_dir() / "teacher")
    at = open_page("pages/train.py")
    at.radio(key="train-kind").set_value("path").run()
    at.text_input(key="train-path").input(str(data)).run()
    assert not at.exception and not at.error
    assert any("the fer2013 preset" in h.value for h in at.subheader)
    teachers = at.multiselect(key="teachers")
    teachers.select(next(o for o in teachers.options if o.startswith("teacher · best"))).run()
    assert at.slider(key="fer2013-distill").value == preset("fer2013-distill").distill != TrainConfig().distill


def test_train_page_says_how_many_faces_of_the_data_are_copies(open_page: OpenPage, tmp_path: Path) -> None:
    data = write_image_tree(tmp_path / "data" / "fer", per_class=3)
    at = open_page("pages/train.py")
    at.radio(key="train-kind").set_value("path").run()
    at.text_input(key="train-path").input(str(data)).run()
    assert not any(c.value.startswith("Whole data set") for c in at.caption)
    first = sorted((data / "train" / "happy").iterdir())[0]
    shutil.copy(first, data / "test" / "sad" / "copied.jpg")  # the same face, labelled otherwise
    at.run()
    assert not at.exception
    assert any(c.value == "Whole data set: 1 of 43 faces copy another pixel for pixel (1 group(s) of copies carry "
                          "different labels)." for c in at.caption)


def test_train_page_refuses_fewer_than_two_emotions_and_orders_a_custom_set(open_page: OpenPage) -> None:
    at = open_page("pages/train.py")
    at.selectbox(key="class-set").set_value("custom").run()
    at.multiselect(key="emotions").set_value([]).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["a class set needs at least two different emotions"]
    assert not [b for b in at.button if b.label == "Start training"]
    at.multiselect(key="emotions").set_value(["surprise", "angry"]).run()
    assert not at.exception and not at.error
    at.number_input(key="demo-epochs").set_value(1)
    at.text_input(key="run-name").input("two")
    next(b for b in at.button if b.label == "Start training").click().run()
    run = RunDir(paths.runs_dir() / "two")
    wait_until_finished(run)
    assert run.config()["classes"] == ["angry", "surprise"]


def test_train_page_says_what_is_wrong_with_a_path(open_page: OpenPage, tmp_path: Path) -> None:
    at = open_page("pages/train.py")
    at.radio(key="train-kind").set_value("path").run()
    at.text_input(key="train-path").input(str(tmp_path / "data" / "nowhere")).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"data not found: {(tmp_path / 'data' / 'nowhere').resolve()}"]
    at.text_input(key="train-path").input("/etc").run()
    assert not at.exception
    assert len(at.error) == 1 and "outside the folders this app may read" in at.error[0].value


def test_a_rejected_upload_is_named_as_uploaded_and_not_kept(open_page: OpenPage, tmp_path: Path) -> None:
    at = open_page("pages/train.py")
    at.radio(key="train-kind").set_value("upload").run()
    bad_csv = b"emotion,pixels\n1,1 2 3\n"
    at.file_uploader(key="train-upload").set_value([("my-faces.csv", bad_csv, "text/csv")]).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["my-faces.csv: bad rows: line 2: 3 pixels, expected 2304"]
    assert not list((tmp_path / "data").glob("upload-*"))


def test_the_new_run_form_and_its_upload_outlast_a_look_at_another_tab(open_page: OpenPage) -> None:
    rows = "\n".join(f"{label},{' '.join([str(40 * label)] * 2304)},Training" for label in range(7) for _ in range(4))
    at = open_page("pages/train.py")
    at.radio(key="train-kind").set_value("upload").run()
    at.file_uploader(key="train-upload").set_value([("faces.csv", f"emotion,pixels,Usage\n{rows}\n".encode(),
                                                    "text/csv")]).run()
    at.number_input(key="fer2013-epochs").set_value(7).run()
    at.session_state["train-tab"] = "Runs"
    at.run()
    at.session_state["train-tab"] = "New run"
    at.run()
    assert not at.exception and not at.error
    assert at.radio(key="train-kind").value == "upload" and at.number_input(key="fer2013-epochs").value == 7
    assert any(c.value.startswith("Using faces.csv, uploaded earlier") for c in at.caption)
    at.button(key="train-forget").click().run()
    assert not any(c.value.startswith("Using faces.csv") for c in at.caption)
    assert "train-forget" not in [b.key for b in at.button]
    assert not [n for n in at.number_input if n.key == "fer2013-epochs"]  # no data: no recipe


def test_train_page_says_a_csvs_own_validation_split_holds_none_out_and_counts_the_steps(
        open_page: OpenPage, monkeypatch: pytest.MonkeyPatch) -> None:
    import fercore.train

    monkeypatch.setattr(fercore.train, "measure_step_seconds", lambda *args, **kwargs: 0.5)
    rows = [f"{label},{' '.join([str(8 * label + n)] * 2304)},{usage}" for label in range(7)
            for usage, count in (("Training", 32), ("PublicTest", 2), ("PrivateTest", 2)) for n in range(count)]
    at = open_page("pages/train.py")
    at.radio(key="train-kind").set_value("upload").run()
    at.file_uploader(key="train-upload").set_value([("fer2013.csv", "\n".join(["emotion,pixels,Usage", *rows]).encode(),
                                                    "text/csv")]).run()
    assert not at.exception and not at.error
    assert "All of the data's train split: its own validation split validates the run, so none are held out." in [
        c.value for c in at.caption]
    estimate = next(c.value for c in at.caption if "per epoch** on this machine" in c.value)
    assert estimate.endswith(": 1 step of 128 faces (96 faces left out each epoch, drawn anew each time), at 500 ms "
                             f"a step (measured with {launcher.training_threads()} thread(s), as the run will use).")


def test_a_stored_upload_is_deleted_from_the_data_picker(open_page: OpenPage, tmp_path: Path) -> None:
    from fercore.app import data_views

    stored = data_views.store_upload("faces.csv", b"emotion,pixels,Usage\n")
    at = open_page("pages/train.py")
    at.radio(key="train-kind").set_value("upload").run()
    assert any(e.label.startswith("Stored uploads: 1,") for e in at.expander)
    at.selectbox(key="train-doomed-upload").set_value(stored).run()
    at.button(key="train-delete-upload").click().run()
    assert not at.exception and not stored.exists() and not data_views.stored_uploads()
    assert not any(e.label.startswith("Stored uploads") for e in at.expander)


def test_evaluate_shows_the_engines_numbers(open_page: OpenPage, with_tiny_run: Path) -> None:
    at = open_page("pages/evaluate.py")
    report = evaluate(with_tiny_run, model_menu.read_card(with_tiny_run)["data_source"], "test")
    assert at.selectbox(key="evaluate-model").value.path == with_tiny_run
    expected = [f"{report.accuracy:.1%}", f"{report.macro_f1:.3f}", f"{len(report.labels):,}"]
    assert [m.value for m in at.metric] == expected
    confusion = next(s for s in chart_specs(at) if s["data"][0]["type"] == "heatmap")
    assert confusion["data"][0]["text"] == [[str(count) for count in row] for row in report.confusion()]
    assert len(at.main.get("download_button")) == 3
    summary = report.calibration().summary()
    assert any(c.value.startswith(f"{summary[0].upper()}{summary[1:]}. ") for c in at.caption)
    diagram = next(s for s in chart_specs(at) if any(t.get("name") == "calibrated" for t in s["data"]))
    assert diagram["data"][0]["y"] == report.calibration().counts.tolist()
    assert any("Inference in int8" in c.value for c in at.caption)
    at.toggle(key="evaluate-int8").set_value(False).run()  # the float model instead of its int8 copy
    as_float = evaluate(with_tiny_run, model_menu.read_card(with_tiny_run)["data_source"], "test", precision="float")
    assert [m.value for m in at.metric][0] == f"{as_float.accuracy:.1%}"
    assert any(f"Inference in {as_float.dtype}" in c.value for c in at.caption)


def test_evaluate_compares_with_another_model(open_page: OpenPage, with_tiny_run: Path, leaning_checkpoint: Path,
                                              tmp_path: Path) -> None:
    shipped = tmp_path / "checkpoints" / "fer2013.pt"  # the page's shipped model: the tiny one, leaning to happy
    shipped.parent.mkdir()
    shutil.copy(leaning_checkpoint, shipped)
    at = open_page("pages/evaluate.py")
    model = at.selectbox(key="evaluate-model")
    model.select_index(next(i for i, o in enumerate(model.options) if o.startswith("tiny · best"))).run()
    assert len(at.metric) == 3  # nothing compared until a model is picked
    other = at.selectbox(key="evaluate-compare")
    other.select_index(next(i for i, o in enumerate(other.options) if o.startswith("shipped model"))).run()
    assert not at.exception and not at.error
    expected = compare(shipped, with_tiny_run, model_menu.read_card(with_tiny_run)["data_source"], "test")
    assert expected.gained + expected.lost > 0
    assert [m.value for m in at.metric][3:] == [f"{100 * expected.difference:+.2f} points",
                                                f"{expected.gained:,} / {expected.lost:,}", f"{expected.p_value:.3g}"]
    assert any(c.value.startswith(f"This model {expected.second.accuracy:.2%} against shipped model (fer2013.pt)")
               for c in at.caption)
    table = next(d.value for d in at.dataframe if "recall: this model" in d.value.columns)
    assert table["gained"].tolist() == [row["gained"] for row in expected.per_class().values()]
    assert table["gained"].dtype == table["faces"].dtype == int
    at.toggle(key="evaluate-compare-faces").set_value(True).run()
    galleries = [image.captions for image in at.image]
    for gained in (True, False):
        changed = expected.changed_faces(gained)
        assert not changed or [f"{f['true']}: {f['first' if gained else 'second']}" for f in changed] in galleries


def test_evaluate_says_what_the_data_reader_skipped(open_page: OpenPage, with_tiny_run: Path, tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path / "data" / "fer", per_class=2)
    (tree / "test" / "sad" / "broken.jpg").write_bytes(b"not a jpeg")
    at = open_page("pages/evaluate.py")
    at.radio(key="evaluate-kind").set_value("path").run()
    at.text_input(key="evaluate-path").input(str(tree)).run()
    assert not at.exception and not at.error
    assert len(at.warning) == 1 and "skipped 1 unreadable file(s), e.g. " in at.warning[0].value
    assert "broken.jpg" in at.warning[0].value
    assert [m.value for m in at.metric][2] == "14"  # the 14 readable test faces were evaluated
    assert any("trained on other data" in i.value and "drawn" not in i.value for i in at.info)


def test_evaluate_scores_every_face_of_a_folder_of_ones_own(open_page: OpenPage, with_tiny_run: Path,
                                                           tmp_path: Path) -> None:
    own = write_image_tree(tmp_path / "data" / "mine", per_class=2, splits=())  # happy/, sad/ ...: no splits
    at = open_page("pages/evaluate.py")
    at.radio(key="evaluate-kind").set_value("path").run()
    at.text_input(key="evaluate-path").input(str(own)).run()
    assert not at.exception and not at.error
    assert next(box for box in at.selectbox if box.label == "Split").value == "all"
    assert [m.value for m in at.metric][2] == "14"  # every face, not a 10% carve


def test_evaluate_warns_that_drawn_faces_are_unlike_a_photo_model(open_page: OpenPage, tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path / "data" / "photos", per_class=3)
    run_training(TrainConfig(data=str(tree), arch="basic", epochs=1, batch_size=8, threads=1),
                 tmp_path / "runs" / "photos")
    at = open_page("pages/evaluate.py")
    at.radio(key="evaluate-kind").set_value("synthetic").run()
    assert not at.exception
    assert any("These drawn faces are unlike its photographs" in i.value for i in at.info)


def test_evaluate_says_when_the_data_is_the_models_own(open_page: OpenPage, with_tiny_run: Path) -> None:
    at = open_page("pages/evaluate.py")
    size = model_menu.read_card(with_tiny_run)["data_source"].partition(":")[2]
    at.number_input(key="evaluate-synthetic").set_value(int(size)).run()
    assert not any("other data" in i.value for i in at.info)
    assert any("trained on these faces" in c.value for c in at.caption)
    assert not any("pixel for pixel" in i.value for i in at.info)  # its test faces: none it trained on
    next(box for box in at.selectbox if box.label == "Split").set_value("train").run()
    assert any(i.value.startswith(f"{int(at.metric[2].value.replace(',', '')):,} of these ") and
               "faces the model trained on" in i.value for i in at.info)
    assert not [t for t in at.toggle if t.key == "evaluate-unseen"]  # every face a training face: none to leave out
    next(box for box in at.selectbox if box.label == "Split").set_value("all").run()
    whole = int(at.metric[2].value.replace(",", ""))
    at.toggle(key="evaluate-unseen").set_value(True).run()
    report = evaluate(with_tiny_run, model_menu.read_card(with_tiny_run)["data_source"], "all").without_seen()
    assert not at.exception and int(at.metric[2].value.replace(",", "")) == len(report.labels) < whole
    assert at.metric[0].value == f"{report.accuracy:.1%}"


def test_predict_labels_a_photo_and_reports_a_bad_file(open_page: OpenPage, with_tiny_run: Path,
                                                        astronaut_jpeg: bytes) -> None:
    at = open_page("pages/predict.py")
    at.file_uploader[0].set_value([("astronaut.jpg", astronaut_jpeg, "image/jpeg"),
                                   ("notes.jpg", b"just some text", "image/jpeg")]).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["notes.jpg: not an image file (or a format Pillow cannot read)"]
    assert at.image[0].captions == ["astronaut.jpg: 1 face(s)"]
    face = Predictor.from_checkpoint(with_tiny_run).predict_image(astronaut_jpeg).faces[0]
    titles = [spec["layout"]["title"]["text"] for spec in chart_specs(at)]
    assert titles == [f"face 1: {face.label} {face.confidence:.0%}"]
    blank = io.BytesIO()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(blank, "PNG")
    at.file_uploader[0].set_value([("grey.png", blank.getvalue(), "image/png")]).run()
    assert [spec["layout"]["title"]["text"].split(":")[0] for spec in chart_specs(at)] == ["the whole image"]
    assert not at.main.get("download_button")[1:]  # one photo: its own download, no table of every face
    at.file_uploader[0].set_value([("grey.png", blank.getvalue(), "image/png"),
                                   ("astronaut.jpg", astronaut_jpeg, "image/jpeg")]).run()
    table = at.main.get("download_button")[-1]
    assert table.proto.label == "Every face of these 2 photos (CSV)"
    huge = astronaut_jpeg + bytes(26 * 1024**2)  # past the browser's cap, as a client that ignores it sends it
    at.file_uploader[0].set_value([("huge.jpg", huge, "image/jpeg")]).run()
    assert [e.value for e in at.error] == ["huge.jpg is 26 MB, over the limit of 25 MB"] and not at.image


def test_predict_labels_a_video_file(open_page: OpenPage, with_tiny_run: Path, tmp_path: Path) -> None:
    from test_video import write_clip

    clip = write_clip(tmp_path / "clip.mp4", frames=5).read_bytes()
    at = open_page("pages/predict.py")
    at.file_uploader(key="predict-video").set_value([("holiday.mp4", clip, "video/mp4")]).run()
    assert not at.exception and not at.error
    assert len(at.main.get("video")) == 1
    assert any(c.value.startswith("holiday.mp4: 5 frames, 0.5 s at 10 frames/s, 320x240; faces in 5 of them")
               for c in at.caption)
    timeline = next(spec for spec in chart_specs(at)
                    if spec["layout"].get("xaxis", {}).get("title", {}).get("text") == "seconds")
    assert [trace["name"] for trace in timeline["data"]] == list(Predictor.from_checkpoint(with_tiny_run).classes)
    labels = [b.proto.label for b in at.main.get("download_button")]
    assert labels == ["Download annotated video", "Every face of every frame (CSV)"]
    at.file_uploader(key="predict-video").set_value([("notes.mp4", b"not a video", "video/mp4")]).run()
    assert [e.value for e in at.error] == ["notes.mp4 is not a video this app can read"]
    assert not at.main.get("video")


def test_predict_shows_where_the_model_looked_at_each_face(open_page: OpenPage, with_tiny_run: Path,
                                                          astronaut_jpeg: bytes) -> None:
    at = open_page("pages/predict.py")
    at.file_uploader[0].set_value([("astronaut.jpg", astronaut_jpeg, "image/jpeg")]).run()
    assert len(at.image) == 1
    at.toggle(key="explain-photos").set_value(True).run()
    assert not at.exception
    predictor = Predictor.from_checkpoint(with_tiny_run)
    face = predictor.predict_image(astronaut_jpeg).faces[0]
    (occlusion,) = occlusion_maps(predictor.loaded, face.crop, [predictor.classes.index(face.label)])
    assert at.image[1].captions == [f"Where face 1 reads as {face.label}: {occlusion.describe()}"]


def test_evaluate_shows_where_the_model_looked_for_a_mistake(open_page: OpenPage, with_tiny_run: Path) -> None:
    at = open_page("pages/evaluate.py")
    report = evaluate(with_tiny_run, model_menu.read_card(with_tiny_run)["data_source"], "test")
    mistakes = report.mistakes()
    assert mistakes, "the tiny model should make some mistakes on its test split"
    shown = len(at.image)
    at.toggle(key="evaluate-explain").set_value(True).run()
    at.selectbox(key="evaluate-explain-pick-any-any").set_value(len(mistakes) - 1).run()
    assert not at.exception
    last = mistakes[-1]
    loaded = Predictor.from_checkpoint(with_tiny_run).loaded
    maps = occlusion_maps(loaded, report.faces.images[last["index"]],
                          [loaded.classes.index(last["predicted"]), loaded.classes.index(last["true"])], report.tta)
    assert maps[0].probability == pytest.approx(last["confidence"], abs=1e-5)
    assert [image.captions[0] for image in at.image[shown:]] == [
        f"{role}: {m.target} {m.probability:.0%}; {m.describe()}" for role, m in zip(("predicted", "true"), maps)]


def test_evaluate_shows_the_mistakes_of_one_kind(open_page: OpenPage, with_tiny_run: Path) -> None:
    at = open_page("pages/evaluate.py")
    report = evaluate(with_tiny_run, model_menu.read_card(with_tiny_run)["data_source"], "test")
    confusion = report.confusion()
    np.fill_diagonal(confusion, 0)
    true, predicted = np.unravel_index(confusion.argmax(), confusion.shape)  # the commonest kind of mistake
    at.selectbox(key="evaluate-mistakes-true").set_value(report.classes[true]).run()
    at.selectbox(key="evaluate-mistakes-predicted").set_value(report.classes[predicted]).run()
    gallery = next(image for image in at.image if "→" in image.captions[0])
    expected = report.mistakes(true=report.classes[true], predicted=report.classes[predicted])
    assert gallery.captions == [f"{m['true']} → {m['predicted']} {m['confidence']:.0%}" for m in expected]
    assert len(expected) == min(24, confusion[true, predicted])
    at.selectbox(key="evaluate-mistakes-predicted").set_value(report.classes[true]).run()
    assert [s.value for s in at.success] == ["No such mistakes on this split."]


def test_live_webcam_annotates_frames_with_no_outside_ice_servers(open_page: OpenPage, with_tiny_run: Path,
                                                                  webrtc_calls: list[dict]) -> None:
    from skimage.data import astronaut

    at = open_page("pages/predict.py")
    call = webrtc_calls[-1]
    assert call["rtc_configuration"] == {"iceServers": []}
    assert any(c.value.startswith("No camera, or the browser refuses it? Upload photos in the Photos tab instead.")
               for c in at.caption)  # the Photos tab takes uploads, not pictures
    frames = [av.VideoFrame.from_ndarray(astronaut(), format="rgb24") for _ in range(2)]
    with ThreadPoolExecutor(1) as worker:  # as streamlit-webrtc runs it: an event loop in a thread of its own
        annotated = worker.submit(asyncio.run, call["queued_video_frames_callback"](frames)).result()
    assert len(annotated) == 2  # both queued frames, not just the newest
    for frame in annotated:
        image = frame.to_ndarray(format="rgb24")
        assert image.shape == astronaut().shape and not np.array_equal(image, astronaut())


def test_a_restarted_app_reconnects_to_a_run_still_training(open_page: OpenPage) -> None:
    from fercore.config import TrainConfig

    run = launcher.start_training(TrainConfig(data="synthetic:700", arch="basic", epochs=200, batch_size=16),
                                     "long")
    try:
        deadline = time.monotonic() + 120
        while not run.status().get("images_per_s") and time.monotonic() < deadline:  # its first progress report
            time.sleep(0.2)
        at = open_page("pages/train.py")  # a new AppTest is a fresh app process's view: nothing in session
        assert not at.exception
        assert at.session_state["train-tab"] == "Live" and at.selectbox[0].value.name == "long"
        text = at.progress[0].text
        assert text.startswith("**running**")
        speed = re.search(r" · ([\d,]+) images/s · ", text)
        assert speed and int(speed[1].replace(",", "")) > 0, text  # from the status: the curves refresh apart
        assert [spec["layout"]["annotations"][0]["text"] for spec in chart_specs(at)] == ["loss"]
        assert run.status()["state"] == "running"  # opening the page neither killed nor duplicated it
    finally:
        run.request_stop()
        deadline = time.monotonic() + 120
        while run.is_active() and time.monotonic() < deadline:
            time.sleep(0.2)
    assert run.status()["state"] == "stopped"


def test_evaluate_takes_the_data_of_the_model_picked(open_page: OpenPage, tiny_checkpoint: Path) -> None:
    shutil.copytree(tiny_checkpoint.parent, paths.runs_dir() / "tiny")
    run_training(TrainConfig(data="synthetic:420", arch="basic", epochs=1, batch_size=32, threads=1,
                             augment=AugmentConfig.off()), paths.runs_dir() / "small")
    at = open_page("pages/evaluate.py")
    model = at.selectbox(key="evaluate-model")
    assert model.value.path.parent.name == "small"
    assert at.number_input(key="evaluate-synthetic").value == 420
    at.radio(key="evaluate-kind").set_value("path").run()  # a choice of one's own, for this model
    model.select_index(next(i for i, o in enumerate(model.options) if o.startswith("tiny · best"))).run()
    assert not at.exception and not at.error and at.selectbox(key="evaluate-model").value.path.parent.name == "tiny"
    assert at.radio(key="evaluate-kind").value == "synthetic"
    assert at.number_input(key="evaluate-synthetic").value == 2100
    assert any("trained on these faces" in c.value for c in at.caption)
    assert not any("other data" in i.value for i in at.info)


def test_deleting_the_upload_in_the_uploader_clears_it(open_page: OpenPage) -> None:
    from fercore.app import data_views

    rows = "\n".join(f"{label},{' '.join([str(40 * label)] * 2304)},Training" for label in range(7) for _ in range(4))
    content = f"emotion,pixels,Usage\n{rows}\n".encode()
    at = open_page("pages/train.py")
    at.radio(key="train-kind").set_value("upload").run()
    at.file_uploader(key="train-upload").set_value([("faces.csv", content, "text/csv")]).run()
    [stored] = data_views.stored_uploads()
    assert any(stored.name in option for option in at.selectbox(key="train-doomed-upload").options)  # listed at once
    at.selectbox(key="train-doomed-upload").set_value(stored).run()
    at.button(key="train-delete-upload").click().run()
    assert not at.exception and not at.error
    assert not stored.exists() and not data_views.stored_uploads()  # not stored again from the uploader
    assert [t.value for t in at.toast] == [f"Deleted {stored.name}"]
    assert not any(c.value.startswith(("Stored as", "Using faces.csv")) for c in at.caption)
    at.file_uploader[0].set_value([("faces.csv", content, "text/csv")]).run()  # uploaded again: stored again
    assert not at.exception and not at.error and stored.exists()
    assert any(c.value == f"Stored as {stored}" for c in at.caption)


@pytest.mark.parametrize("test_rows", [2, 0])  # with PrivateTest rows, and without: then no test split to speak of
def test_evaluate_says_a_csvs_own_validation_split_validated_its_model(open_page: OpenPage, tmp_path: Path,
                                                                       test_rows: int) -> None:
    rows = [f"{label},{' '.join([str(8 * label + n)] * 2304)},{usage}" for label in range(7)
            for usage, count in (("Training", 8), ("PublicTest", 2), ("PrivateTest", test_rows)) for n in range(count)]
    csv = tmp_path / "data" / "fer2013.csv"
    csv.parent.mkdir()
    csv.write_text("\n".join(["emotion,pixels,Usage", *rows]))
    run_training(TrainConfig(data=str(csv), arch="basic", epochs=1, batch_size=16, threads=1,
                             augment=AugmentConfig.off()), paths.runs_dir() / "csv")
    at = open_page("pages/evaluate.py")
    assert not at.exception and not at.error
    assert at.radio(key="evaluate-kind").value == "path"
    assert [c.value for c in at.caption if "trained on these faces" in c.value] == [
        f"This model was trained on these faces ({csv}): its val split is the data's own, which validated that "
        f"training{', its test split was not trained on' if test_rows else ''} (a note below counts any faces it "
        "repeats)."]


def test_a_run_cards_rows_say_how_its_weights_were_made(tmp_path: Path) -> None:
    card = {"arch": "basic", "data_source": "synthetic:700", "metrics": {"val_acc": 0.5, "averaged_epochs": 2},
            "config": {"init_from": "/models/start.pt", "teachers": ["/models/a.pt", "/models/b.pt"], "distill": 0.8,
                       "swa_epochs": 3}}
    rows = model_menu.card_rows(card, tmp_path / "run" / "best.pt")
    assert rows["Warm-started from"] == "/models/start.pt"
    assert rows["Distilled from"] == "/models/a.pt, /models/b.pt (their averaged predictions weigh 0.8 in the loss)"
    assert rows["Weight averaging"] == "over the last 3 epochs: these weights are the average of 2 epoch(s)"
    live = model_menu.card_rows({**card, "config": {**card["config"], "teaching": "live"}}, tmp_path / "best.pt")
    assert live["Distilled from"] == ("/models/a.pt, /models/b.pt (their averaged predictions weigh 0.8 in the loss; "
                                      "they labelled every augmented batch)")
    del card["metrics"]["averaged_epochs"]  # last.pt, or a best epoch before the averaging began
    assert model_menu.card_rows(card, tmp_path / "run" / "last.pt")["Weight averaging"] == (
        "over the last 3 epochs: these weights are the trained ones, not an average")
    plain = model_menu.card_rows({**card, "config": TrainConfig().to_dict()}, tmp_path / "run" / "best.pt")
    assert not {"Warm-started from", "Distilled from", "Weight averaging"} & set(plain)
