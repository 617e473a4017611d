"""`python -m fercore`: every command, its --json output and exit codes."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_image_tree

from fercore.augment import AugmentConfig
from fercore.checkpoint import read_checkpoint
from fercore.config import PRESETS, TrainConfig, preset, recipe_flags
from fercore.evaluate import evaluate

ROOT = Path(__file__).resolve().parent.parent


def fercore(*args: str, cwd: Path = ROOT, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **({"HOME": str(home)} if home else {})}
    return subprocess.run([sys.executable, "-m", "fercore", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_train_then_resume_from_the_cli(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = fercore("train", "--data", "synthetic:700", "--arch", "basic", "--epochs", "1", "--batch-size", "32",
                     "--threads", "1", "--run-dir", run, "--classes", "basic4", "--cutmix", "0.5")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["epochs"] == 1
    assert "epoch 1:" in result.stderr
    assert result.stderr.splitlines()[0] == (f"training in {run} (stop, keeping last.pt: Ctrl-C or python -m fercore "
                                             f"runs --stop {run})")
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["angry", "happy", "neutral", "sad"]
    assert (config["augment"]["cutmix"], config["augment"]["mixup"], config["augment"]["rotate"]) == (0.5, 0.0, 15.0)
    assert "not negative (0 = off)" in _one_error_line(fercore("train", "--data", "synthetic:700", "--mixup", "-1",
                                                             "--run-dir", tmp_path / "refused"))
    assert "has finished: nothing to resume" in _one_error_line(fercore("train", "--resume", run, "--threads", "1"))
    refused = _one_error_line(fercore("train", "--resume", run, "--lr", "0.1", "--no-augment"))
    assert "--lr" in refused and "--no-augment" in refused and "--threads" in refused
    listing = fercore("runs", "--root", tmp_path, "--json")
    assert json.loads(listing.stdout)[0]["state"] == "finished"


def test_relative_paths_are_kept_absolute_and_a_run_dir_stands_for_its_best(tmp_path: Path) -> None:
    from fercore.runs import RunDir

    write_image_tree(tmp_path / "tree", per_class=10, splits=("train",))
    common = ["--data", "tree", "--arch", "basic", "--epochs", "1", "--batch-size", "32", "--threads", "1"]
    assert fercore("train", *common, "--run-dir", "a", cwd=tmp_path).returncode == 0
    warm = fercore("train", *common, "--init", "a", "--teachers", "a", "--run-dir", "b", cwd=tmp_path)
    assert warm.returncode == 0, warm.stderr
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["data"] == str(tmp_path / "tree")
    assert config["init_from"] == str(tmp_path / "a" / "best.pt") == config["teachers"][0]
    assert [run.name for run in RunDir(tmp_path / "b").lineage()] == ["a", "b"]  # read from another directory
    assert fercore("train", *common[2:], "--data", "~/tree", "--run-dir", "c", cwd=tmp_path, home=tmp_path
                   ).returncode == 0
    assert json.loads((tmp_path / "c" / "config.json").read_text())["data"] == str(tmp_path / "tree")  # ~ expanded
    assert fercore("train", *common, "--run-dir", "~/d", cwd=tmp_path, home=tmp_path).returncode == 0
    assert (tmp_path / "d" / "best.pt").is_file() and not (tmp_path / "~").exists()
    shipped = fercore("ship", "--checkpoint", "b", "--data", "tree", "--out", "out/model.pt", cwd=tmp_path)
    assert shipped.returncode == 0, shipped.stderr
    assert torch.load(tmp_path / "out" / "model.pt", weights_only=True)["card"]["training"]["epochs"] == 2


def test_runs_lists_why_a_run_failed_or_was_interrupted(tmp_path: Path) -> None:
    from fercore.runs import RunDir

    for name, status in [("diverged", {"state": "failed", "error": "training diverged at epoch 3"}),
                         ("killed", {"state": "running", "pid": 2 ** 22 + 1}),  # no such process
                         ("done", {"state": "finished", "error": None})]:
        run = RunDir(tmp_path / name)
        run.write_config({"arch": "basic", "epochs": 5})
        run.write_status(**status)
    lines = fercore("runs", "--root", tmp_path).stdout.splitlines()
    assert "  failed: training diverged at epoch 3" in lines
    assert "  interrupted: the training process ended without saying so (killed or crashed)" in lines
    assert len(lines) == 6  # the header, three runs, and one reason for each of the two that did not finish
    assert {row["name"]: row["error"] for row in json.loads(fercore("runs", "--root", tmp_path, "--json").stdout)}[
        "done"] is None


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_evaluate_runs_on_the_device_asked_for_or_says_why_not(tiny_checkpoint: Path, device: str) -> None:
    result = fercore("evaluate", "--checkpoint", tiny_checkpoint, "--data", "synthetic:70", "--split", "all",
                     "--device", device, "--json")
    if device == "cpu" or torch.cuda.is_available():
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["dtype"] in (("int8",) if device == "cpu" else ("bfloat16", "float32"))
    else:
        assert _one_error_line(result) == "fercore: error: --device cuda asked for, but no CUDA GPU is available"


def test_evaluate_and_train_say_what_the_data_reader_skipped(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = write_image_tree(tmp_path / "archive", per_class=3)
    (data / "train" / "happy" / "broken.jpg").write_bytes(b"not a jpeg")
    result = fercore("evaluate", "--checkpoint", tiny_checkpoint, "--data", data, "--split", "test", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["n"] == 21
    assert "data: skipped 1 unreadable file(s), e.g. " in result.stderr and "broken.jpg" in result.stderr
    trained = fercore("train", "--data", data, "--arch", "basic", "--epochs", "1", "--batch-size", "8",
                      "--threads", "1", "--run-dir", tmp_path / "run")
    assert trained.returncode == 0 and "data: skipped 1 unreadable file(s)" in trained.stderr


def test_evaluate_json_contract(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = write_image_tree(tmp_path / "archive", per_class=3)
    result = fercore("evaluate", "--checkpoint", tiny_checkpoint, "--data", data, "--split", "test", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert 0 <= out["accuracy"] <= 1 and 0 <= out["macro_f1"] <= 1 and out["n"] == 21
    assert out["classes"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert set(out["per_class"]["happy"]) == {"precision", "recall", "f1", "support"}
    assert len(out["confusion"]) == 7 and sum(map(sum, out["confusion"])) == 21 and out["tta"] is True
    assert sum(out["calibration"]["counts"]) == 21 and 0 <= out["calibration"]["error"] <= 1
    only_test = fercore("evaluate", "--checkpoint", tiny_checkpoint, "--data", data / "test", "--split", "test",
                        "--no-tta", "--json")
    assert json.loads(only_test.stdout)["n"] == 21 and json.loads(only_test.stdout)["tta"] is False
    text = fercore("evaluate", "--checkpoint", tiny_checkpoint, "--data", data, "--split", "all")
    assert "accuracy" in text.stdout and "confusion" in text.stdout
    every_face = evaluate(tiny_checkpoint, data, "all")
    assert text.stdout.splitlines()[2] == every_face.calibration().summary()
    header = text.stdout.splitlines()[text.stdout.splitlines().index(next(
        line for line in text.stdout.splitlines() if line.startswith("confusion"))) + 1]
    assert header.split() == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]  # whole names


def test_predict_json_contract(tiny_checkpoint: Path, astronaut_jpeg: bytes, tmp_path: Path) -> None:
    (tmp_path / "face.jpg").write_bytes(astronaut_jpeg)
    (tmp_path / "bad.jpg").write_text("nope")
    result = fercore("predict", "--checkpoint", tiny_checkpoint, tmp_path / "face.jpg", tmp_path / "bad.jpg", "--json")
    assert result.returncode == 0, result.stderr
    good, bad = json.loads(result.stdout)
    assert good["error"] is None and len(good["faces"]) == 1
    face = good["faces"][0]
    assert len(face["box"]) == 4 and face["label"] in face["probabilities"] and 0 < face["confidence"] <= 1
    assert bad["faces"] == [] and "not an image" in bad["error"]
    assert fercore("predict", "--checkpoint", tiny_checkpoint, tmp_path / "bad.jpg").returncode == 2


def test_predict_text_output_and_errors_on_stderr(tiny_checkpoint: Path, astronaut_jpeg: bytes,
                                                  tmp_path: Path) -> None:
    (tmp_path / "face.jpg").write_bytes(astronaut_jpeg)
    result = fercore("predict", "--checkpoint", tiny_checkpoint, "--threads", "1", "~/face.jpg",
                     tmp_path / "missing.jpg", home=tmp_path)
    assert result.returncode == 0
    assert "face.jpg: 1 face\n  face at x=" in result.stdout and "missing" not in result.stdout
    assert result.stderr.strip() == f"fercore: error: {tmp_path / 'missing.jpg'}: file not found"


def test_predict_draws_where_the_model_looked_for_each_face(tiny_checkpoint: Path, astronaut_jpeg: bytes,
                                                            tmp_path: Path) -> None:
    (tmp_path / "face.jpg").write_bytes(astronaut_jpeg)
    result = fercore("predict", "--checkpoint", tiny_checkpoint, tmp_path / "face.jpg", "--explain", tmp_path / "maps")
    assert result.returncode == 0, result.stderr
    (drawn,) = (tmp_path / "maps").iterdir()
    label = drawn.stem.split("-")[-1]
    assert drawn.name == f"face-face1-{label}.png" and f": {label} " in result.stdout
    assert result.stdout.endswith(f"  where the model looked: {drawn}\n")
    as_json = fercore("predict", "--checkpoint", tiny_checkpoint, tmp_path / "face.jpg", "--json", "--explain",
                      tmp_path / "maps")
    assert json.loads(as_json.stdout)[0]["faces"][0]["explanation"] == str(drawn)
    on_a_file = fercore("predict", "--checkpoint", tiny_checkpoint, tmp_path / "face.jpg", "--explain",
                        tmp_path / "face.jpg")
    assert _one_error_line(on_a_file) == f"fercore: error: {tmp_path / 'face.jpg'} is a file, not a folder for the maps"
    refused = fercore("predict", "--checkpoint", tiny_checkpoint, tmp_path / "face.jpg", "--explain",
                      tmp_path / "face.jpg" / "maps")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == (f"fercore: error: cannot write {tmp_path / 'face.jpg' / 'maps'}: "
                                      f"{tmp_path / 'face.jpg'} is a file, not a folder")


def test_a_stopped_run_says_how_to_continue_and_a_run_dir_stands_for_its_best(tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [sys.executable, "-m", "fercore", "train", "--data", "synthetic:700", "--arch", "basic", "--epochs",
               "3", "--batch-size", "32", "--threads", "1", "--run-dir", str(run)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=ROOT) as process:
        for line in process.stderr:
            if line.startswith("epoch 1:"):
                (run / "STOP").touch()
                break
        out, err = process.communicate(timeout=300)
    assert process.returncode == 130
    assert f"continue with: python -m fercore train --resume {run}" in err
    assert json.loads(out.strip().splitlines()[-1])["stopped"] is True
    listing = fercore("runs", "--root", tmp_path)
    assert listing.stdout.splitlines()[0].startswith("run ") and "stopped" in listing.stdout
    assert " 1/3 " in listing.stdout  # the epochs completed, not the one it stopped in
    evaluated = fercore("evaluate", "--checkpoint", run, "--data", "synthetic:70", "--split", "all", "--json")
    assert evaluated.returncode == 0, evaluated.stderr


@pytest.mark.parametrize("how, why", [("SIGTERM", "interrupted (Ctrl-C or SIGTERM)"),
                                      ("STOP", "stopped before training began")])
def test_a_stop_while_starting_ends_cleanly_and_leaves_the_directory_reusable(tmp_path: Path, how: str,
                                                                              why: str) -> None:
    import signal
    import time

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "fercore", "train", "--data", "synthetic:200000", "--threads",
                                "1", "--run-dir", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while not (run / "status.json").exists() and time.monotonic() < deadline:  # the run has started
        time.sleep(0.05)
    if how == "SIGTERM":
        process.send_signal(signal.SIGTERM)
    else:  # the app's Stop button, or runs --stop
        (run / "STOP").touch()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.strip().endswith("fercore: interrupted"), err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and not (run / "run.lock").exists()
    assert status["error"] == why and not (run / "STOP").exists()
    refused = _one_error_line(fercore("train", "--resume", run))
    assert "ended before its first save; start it again with the same command" in refused


def test_width_scales_the_architecture(tmp_path: Path) -> None:
    result = fercore("train", "--data", "synthetic:700", "--arch", "basic", "--width", "0.5", "--epochs", "1",
                     "--batch-size", "32", "--threads", "1", "--run-dir", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r" / "config.json").read_text())["arch_args"] == {"widths": [16, 32, 64, 128]}


def test_export_command(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = fercore("export", "--checkpoint", tiny_checkpoint, "--format", "torchscript", "--out", tmp_path / "m.pt")
    assert result.returncode == 0 and (tmp_path / "m.pt").stat().st_size > 1000
    assert result.stdout.strip() == (f"{tmp_path / 'm.pt'}: input float32 [N,1,48,48] grayscale 0..255 (face crops); "
                                     "output probabilities [N,7] in the order angry, disgust, fear, happy, neutral, "
                                     "sad, surprise")
    result = fercore("export", "--checkpoint", tiny_checkpoint, "--format", "onnx", "--out", "~/m.onnx", home=tmp_path)
    assert result.returncode == 0 and (tmp_path / "m.onnx").is_file()


def test_outputs_that_cannot_be_written_are_refused_and_the_input_kept(tiny_checkpoint: Path, tmp_path: Path) -> None:
    kept = tmp_path / "model.pt"
    kept.write_bytes(tiny_checkpoint.read_bytes())
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    export = ["export", "--checkpoint", kept, "--format", "torchscript", "--out"]
    assert "is the checkpoint being exported" in _one_error_line(fercore(*export, kept))
    assert read_checkpoint(kept)["arch"] == "basic"  # still the checkpoint
    assert "not a file or folder" in _one_error_line(fercore(*export, "/dev/null"))
    assert "not a file or folder" in _one_error_line(fercore(*export, tmp_path / "loop"))
    assert "afile is a file, not a folder" in _one_error_line(fercore(*export, tmp_path / "afile" / "m.pt"))
    train = ["train", "--data", "synthetic:700", "--epochs", "1", "--run-dir"]
    assert "afile is a file, not a folder" in _one_error_line(fercore(*train, tmp_path / "afile" / "run"))
    ship = ["ship", "--checkpoint", kept, "--data", "synthetic:700", "--out", tmp_path / "s.pt"]
    assert "is not a training run" in _one_error_line(fercore(*ship, "--run", tmp_path / "nowhere"))
    assert not (tmp_path / "s.pt").exists() and Path("/dev/null").is_char_device()


def test_models_lists_architectures() -> None:
    out = fercore("models").stdout
    assert "basic" in out and "vgg" in out and "fernet" in out
    assert "2.11M, 4.31M, 7.26M" in next(line for line in out.splitlines() if line.startswith("fernet"))


@pytest.mark.parametrize("args, message", [
    (["train"], "--data is required"),
    (["train", "--data", "/no/such/folder", "--run-dir", "{tmp}/r"], "data not found"),
    (["train", "--data", "synthetic", "--lr", "-1", "--run-dir", "{tmp}/r"], "learning rate must be positive"),
    (["train", "--data", "synthetic", "--lr", "1e39", "--run-dir", "{tmp}/r"], "and at most 10"),
    (["train", "--data", "synthetic", "--classes", "happy", "grumpy"], "unknown emotion 'grumpy'"),
    (["train", "--epochs", "many"], "invalid int value"),
    (["train", "--data", "synthetic", "--epochs", "0", "--run-dir", "{tmp}/r"], "epochs must be from 1 to 10,000"),
    (["train", "--data", "synthetic", "--epochs", "100000", "--run-dir", "{tmp}/r"], "epochs must be from 1 to 10,000"),
    (["train", "--preset", "fer2013", "--run-dir", "{tmp}/r"], "--data is required"),
    (["train", "--preset", "fer2013-distill", "--data", "synthetic", "--run-dir", "{tmp}/r"],
     "the fer2013-distill preset needs --teachers"),
    (["train", "--preset", "fer2013-wide", "--data", "synthetic", "--run-dir", "{tmp}/r"],
     "the fer2013-wide preset needs --teachers"),
    (["train", "--preset", "fer2013-2x", "--data", "synthetic", "--run-dir", "{tmp}/r"],
     "the fer2013-2x preset needs --teachers"),
    (["train", "--preset", "fer2013-restart", "--data", "synthetic", "--run-dir", "{tmp}/r"],
     "the fer2013-restart preset needs --init CHECKPOINT"),
    (["train", "--data", "synthetic", "--epochs", "2", "--swa-epochs", "3", "--run-dir", "{tmp}/r"],
     "weight-averaging epochs must be between 0 (off) and the epochs"),
    (["train", "--data", "synthetic", "--early-stop", "-1", "--run-dir", "{tmp}/r"], "early-stop patience"),
    (["train", "--data", "synthetic", "--threads", "-2", "--run-dir", "{tmp}/r"], "threads must not be negative"),
    (["train", "--data", "synthetic", "--weight-decay", "-1", "--run-dir", "{tmp}/r"], "weight decay"),
    (["train", "--resume", "{run}", "--seed", "0"], "drop --seed"),
    (["train", "--data", "synthetic", "--teachers", "{tmp}/none.pt", "--run-dir", "{tmp}/r"], "checkpoint not found"),
    (["train", "--data", "synthetic", "--teachers", "{ckpt}", "--distill", "2"], "distillation weight"),
    (["evaluate", "--data", "synthetic", "--checkpoint", "{tmp}/none.pt"], "checkpoint not found"),
    (["evaluate", "--data", "{tmp}/notes.txt", "--checkpoint", "{ckpt}"], "unsupported data file notes.txt"),
    (["evaluate", "--data", "synthetic", "--checkpoint", "{tmp}/notes.txt"], "not a readable checkpoint"),
    (["predict", "{tmp}/notes.txt", "--checkpoint", "{ckpt}"], "notes.txt: not an image file"),
    (["predict", "{tmp}/tree", "--checkpoint", "{ckpt}"], "tree: a folder with no images in it (.bmp, .gif,"),
    (["export", "--format", "onnx", "--out", "x", "--checkpoint", "{tmp}/none.pt"], "checkpoint not found"),
    (["train", "--data", "synthetic", "--lr", "inf", "--run-dir", "{tmp}/r"], "lr must be a finite number"),
    (["train", "--data", "synthetic", "--distill", "0.5", "--run-dir", "{tmp}/r"], "give --teachers too"),
    (["train", "--data", "synthetic", "--teaching", "live", "--run-dir", "{tmp}/r"], "--teaching is about the"),
    (["train", "--data", "synthetic", "--width", "9", "--run-dir", "{tmp}/r"], "--width must be between"),
    (["train", "--data", "synthetic", "--run-dir", "{tmp}/notes.txt"], "notes.txt is a file"),
    (["train", "--resume", "{tmp}/nothing"], "no run at"),
    (["train", "--resume", "{tmp}/notes.txt"], "is not a run directory"),
    (["evaluate", "--data", "{tmp}/tree/train", "--checkpoint", "{ckpt}"], "--split val takes the faces carved"),
    (["evaluate", "--data", "{tmp}/own", "--checkpoint", "{ckpt}"], "has no test split (it has: all): --split all "
                                                                      "scores every face"),
    (["train", "--data", "~no-such-user-here/faces", "--run-dir", "{tmp}/r"], "no such user's home folder"),
    (["train", "--data", "synthetic", "--seed", "-1", "--run-dir", "{tmp}/r"], "seed must be"),
    (["evaluate", "--data", "synthetic", "--checkpoint", "{ckpt}", "--threads", "-1"], "threads must not be"),
    (["export", "--format", "onnx", "--out", "{tmp}", "--checkpoint", "{ckpt}"], "is a directory: --out takes"),
    (["runs", "--root", "{ckpt}"], "is not a folder of runs"),
    (["runs", "--stop", "{tmp}"], "is not a training run (it has no config.json)"),
    (["runs", "--stop", "{run}"], "is not training (state: finished)"),
    (["frobnicate"], "invalid choice"),
])
def test_user_errors_exit_2_with_one_line(tmp_path: Path, tiny_checkpoint: Path, args: list[str], message: str) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    write_image_tree(tmp_path / "tree", per_class=1, splits=("train",))
    write_image_tree(tmp_path / "own", per_class=1, splits=())
    result = fercore(*[a.format(tmp=tmp_path, ckpt=tiny_checkpoint, run=tiny_checkpoint.parent) for a in args])
    assert message in _one_error_line(result)
    assert not (tmp_path / "r").exists()  # nothing left behind


@pytest.mark.parametrize("options, message", [
    ({"arch": "resnet"}, "unknown architecture 'resnet'"),
    ({"arch_args": {"depth": 3}}, "arch_args {'depth': 3} do not fit fernet: "),
    ({"arch_args": {"widths": [32, 64, 128, 256, 512]}}, "do not fit fernet: a and b must have same reduction dim"),
    ({"arch_args": {"widths": [32.5, 64, 128, 256]}}, "do not fit fernet: widths must be a list of positive whole"),
    ({"arch_args": {"widths": []}}, "arch_args {'widths': []} do not fit fernet: widths must be a list of positive"),
    ({"epochs": "10"}, "training option epochs must be of type int, not '10'"),
    ({"nesterov": 1}, "training option nesterov must be of type bool"),
    ({"augment": None}, "training option augment must be a JSON object, not None"),
    ({"classes": ["sad"]}, "at least two different emotions"),
    ({"classes": ["sad", "happy"]}, "classes must be distinct and in the order"),
    ({"augment": {"blur": 1.0}}, "unknown augmentation(s): blur"),
    ({"augment": {"rotate": "15"}}, "augmentation strengths must be numbers"),
    ({"data": "/no/such/archive.zip"}, "data not found: /no/such/archive.zip"),
    ({"data": "synthetic:12"}, "synthetic size must be between 70 and 200000"),
    ({"split_seed": -3}, "split_seed must be a whole number from 0 to 4294967295"),
    ({"seed": 2**64}, "seed must be a whole number from 0 to 4294967295"),
])
def test_a_bad_config_file_is_one_line_and_leaves_no_run(tmp_path: Path, options: dict, message: str) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data": "synthetic:700", **options}))
    assert message in _one_error_line(fercore("train", "--config", config, "--run-dir", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_runs_stop_asks_an_active_run_to_stop(tmp_path: Path) -> None:
    from fercore.runs import RunDir

    run = RunDir(tmp_path / "busy")
    run.write_config({"threads": 1})
    run.write_status(state="running", pid=os.getpid())  # this test's process stands in for the trainer
    result = fercore("runs", "--stop", run.path)
    assert result.returncode == 0 and run.stop_requested()


def test_missing_shipped_model_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    from fercore import checkpoint
    from fercore.cli import main

    monkeypatch.setattr(checkpoint, "SHIPPED_CHECKPOINT", tmp_path / "fer2013.pt")
    assert main(["evaluate", "--data", "synthetic", "--checkpoint", str(tmp_path / "fer2013.pt")]) == 2
    line = capsys.readouterr().err.strip()
    assert "shipped model" in line and "git checkout -- checkpoints/fer2013.pt" in line and "train" in line
    assert "\n" not in line


def test_evaluate_can_leave_out_the_faces_the_model_trained_on(tiny_checkpoint: Path, tmp_path: Path) -> None:
    args = ("evaluate", "--checkpoint", tiny_checkpoint, "--data", "synthetic:2100", "--no-tta", "--json")
    whole = fercore(*args, "--split", "all")
    assert whole.returncode == 0 and "are, pixel for pixel, faces the model trained on" in whole.stderr
    seen = json.loads(whole.stdout)["seen_in_training"]
    only = fercore(*args, "--split", "all", "--unseen-only")
    unseen = json.loads(only.stdout)
    assert unseen["n"] == json.loads(whole.stdout)["n"] - seen > 0 and unseen["left_out_seen"] == seen
    assert f"data: scored only the {unseen['n']:,} faces the model did not train on ({seen:,} left out)" in only.stderr
    assert "none of these faces is a training face" in fercore(*args, "--split", "test", "--unseen-only").stderr
    assert unseen["accuracy"] == pytest.approx(json.loads(whole.stdout)["accuracy_unseen"])
    assert "none is left to score" in _one_error_line(fercore(*args, "--split", "train", "--unseen-only"))
    older = torch.load(tiny_checkpoint, weights_only=True)
    del older["train_face_digests"]
    torch.save(older, tmp_path / "older.pt")
    assert "keeps no digests of its training faces" in _one_error_line(
        fercore("evaluate", "--checkpoint", tmp_path / "older.pt", "--data", "synthetic:2100", "--unseen-only"))


def test_the_teachers_pass_is_told_a_line_a_quarter_without_a_terminal() -> None:
    from fercore.cli import _progress_printer

    stream = io.StringIO()
    show = _progress_printer("runs/r", stream)
    for done in range(50, 1001, 50):  # the first report knows no rate yet
        show({"type": "startup", "phase": "teachers", "done": done, "total": 1000,
              "eta_s": (1000 - done) * 0.6 if done > 50 else None})
    assert stream.getvalue().splitlines() == [
        "training in runs/r (stop, keeping last.pt: Ctrl-C or python -m fercore runs --stop runs/r)",
        "the teachers' predictions: 50 of 1,000 faces (5%)",
        "the teachers' predictions: 250 of 1,000 faces (25%), ETA 8 min",
        "the teachers' predictions: 500 of 1,000 faces (50%), ETA 5 min",
        "the teachers' predictions: 750 of 1,000 faces (75%), ETA 2 min",
        "the teachers' predictions: 1,000 of 1,000 faces (100%)"]


def test_an_internal_error_is_one_line_unless_fercore_debug_asks_for_the_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from fercore import cli

    def broken(args: object) -> int:
        raise RuntimeError("a bug")
    monkeypatch.setattr(cli, "cmd_models", broken)
    for debug in (None, "", "0"):
        if debug is None:
            monkeypatch.delenv("FERCORE_DEBUG", raising=False)
        else:
            monkeypatch.setenv("FERCORE_DEBUG", debug)
        assert cli.main(["models"]) == 1
        assert capsys.readouterr().err.strip() == ("fercore: internal error: RuntimeError: a bug "
                                                   "(set FERCORE_DEBUG=1 for details)")
    monkeypatch.setenv("FERCORE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["models"])


def test_runs_before_any_run_is_an_empty_listing(tmp_path: Path) -> None:
    listing = fercore("runs", "--root", tmp_path / "none-yet")
    assert listing.returncode == 0 and listing.stderr.strip() == f"no runs in {tmp_path / 'none-yet'}"
    assert json.loads(fercore("runs", "--root", tmp_path / "none-yet", "--json").stdout) == []


@pytest.mark.parametrize("recipe", [
    {"arch": "basic", "epochs": 1, "batch_size": 96, "lr": 0.004, "optimizer": "adamw", "schedule": "cosine",
     "weight_decay": 0.001, "label_smoothing": 0.05, "class_weights": "balanced", "early_stop": 3,
     "val_fraction": 0.2, "seed": 5, "swa_epochs": 1, "classes": ["happy", "sad", "surprise"],
     "arch_args": {"widths": [16, 32, 64, 128]}, "augment": {**AugmentConfig.off().to_dict(), "cutmix": 1.0}},
    {**PRESETS["demo"], "epochs": 1, "augment": {**PRESETS["demo"]["augment"].to_dict(), "mixup": 0.4}},
])
def test_the_flags_a_model_card_names_rebuild_the_runs_recipe(tmp_path: Path, recipe: dict) -> None:
    config = TrainConfig.from_dict({**recipe, "data": "synthetic:700"}).to_dict()
    flags, unflagged = recipe_flags(config)
    assert unflagged == []
    result = fercore("train", "--data", "synthetic:700", *" ".join(flags).split(), "--threads", "1",
                     "--run-dir", tmp_path / "again")
    assert result.returncode == 0, result.stderr
    rebuilt = TrainConfig.from_dict(json.loads((tmp_path / "again" / "config.json").read_text())).to_dict()
    machine = ("data", "threads", "device", "amp")
    assert {k: v for k, v in rebuilt.items() if k not in machine} == {k: v for k, v in config.items()
                                                                      if k not in machine}


def test_recipe_options_no_flag_sets_are_named() -> None:
    config = TrainConfig(momentum=0.8, augment=AugmentConfig(rotate=3), arch_args={"widths": [8, 8, 8, 8, 8]})
    assert recipe_flags(config.to_dict()) == ([], ["momentum", "arch_args", "augment"])
    wide = preset("fer2013-wide", epochs=5, teachers=["t.pt"]).to_dict()
    assert recipe_flags(wide) == (["--preset fer2013-wide", "--epochs 5"], [])
    live = ["--preset fer2013-wide", "--epochs 5", "--teaching live"]
    assert recipe_flags({**wide, "teaching": "live"}) == (live, [])
    assert recipe_flags({**wide, "teachers": []})[0] == ["--preset fer2013", "--epochs 5", "--width 1.5"]
    untaught = {**wide, "teachers": [], "teaching": "live"}  # what the teachers see means nothing without them
    assert recipe_flags(untaught)[0] == ["--preset fer2013", "--epochs 5", "--width 1.5"]
