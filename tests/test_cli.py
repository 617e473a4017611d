"""`python -m fercore`: every command, its --json output and exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_image_tree

ROOT = Path(__file__).resolve().parent.parent


def fercore(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
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
                     "--threads", "1", "--run-dir", run, "--classes", "basic4")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["epochs"] == 1
    assert "epoch 1:" in result.stderr
    assert json.loads((run / "config.json").read_text())["classes"] == ["angry", "happy", "neutral", "sad"]
    again = fercore("train", "--resume", run, "--threads", "1")  # finished: resumes nothing, exits cleanly
    assert again.returncode == 0, again.stderr
    refused = _one_error_line(fercore("train", "--resume", run, "--lr", "0.1", "--no-augment"))
    assert "--lr" in refused and "--no-augment" in refused and "--threads" in refused
    listing = fercore("runs", "--root", tmp_path, "--json")
    assert json.loads(listing.stdout)[0]["state"] == "finished"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_evaluate_runs_on_the_device_asked_for_or_says_why_not(tiny_checkpoint: Path, device: str) -> None:
    result = fercore("evaluate", "--checkpoint", tiny_checkpoint, "--data", "synthetic:70", "--split", "all",
                     "--device", device, "--json")
    if device == "cpu" or torch.cuda.is_available():
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["dtype"] in (("int8",) if device == "cpu" else ("bfloat16", "float16"))
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
    only_test = fercore("evaluate", "--checkpoint", tiny_checkpoint, "--data", data / "test", "--split", "test",
                        "--no-tta", "--json")
    assert json.loads(only_test.stdout)["n"] == 21 and json.loads(only_test.stdout)["tta"] is False
    text = fercore("evaluate", "--checkpoint", tiny_checkpoint, "--data", data, "--split", "all")
    assert "accuracy" in text.stdout and "confusion" in text.stdout


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


def test_export_command(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = fercore("export", "--checkpoint", tiny_checkpoint, "--format", "torchscript", "--out", tmp_path / "m.pt")
    assert result.returncode == 0 and (tmp_path / "m.pt").stat().st_size > 1000


def test_models_lists_architectures() -> None:
    out = fercore("models").stdout
    assert "basic" in out and "vgg" in out and "fernet" in out


@pytest.mark.parametrize("args, message", [
    (["train"], "--data is required"),
    (["train", "--data", "/no/such/folder", "--run-dir", "{tmp}/r"], "data not found"),
    (["train", "--data", "synthetic", "--lr", "-1", "--run-dir", "{tmp}/r"], "learning rate must be positive"),
    (["train", "--data", "synthetic", "--classes", "happy", "grumpy"], "unknown emotion 'grumpy'"),
    (["train", "--epochs", "many"], "invalid int value"),
    (["train", "--preset", "fer2013", "--run-dir", "{tmp}/r"], "--data is required"),
    (["train", "--preset", "fer2013-distill", "--data", "synthetic", "--run-dir", "{tmp}/r"],
     "the fer2013-distill preset needs --teachers"),
    (["train", "--preset", "fer2013-wide", "--data", "synthetic", "--run-dir", "{tmp}/r"],
     "the fer2013-wide preset needs --teachers"),
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
    (["predict", "{tmp}/notes.txt", "--checkpoint", "{ckpt}"], "error"),
    (["export", "--format", "onnx", "--out", "x", "--checkpoint", "{tmp}/none.pt"], "checkpoint not found"),
    (["runs", "--stop", "{tmp}"], "is not a training run (it has no config.json)"),
    (["runs", "--stop", "{run}"], "is not training (state: finished)"),
    (["frobnicate"], "invalid choice"),
])
def test_user_errors_exit_2_with_one_line(tmp_path: Path, tiny_checkpoint: Path, args: list[str], message: str) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    result = fercore(*[a.format(tmp=tmp_path, ckpt=tiny_checkpoint, run=tiny_checkpoint.parent) for a in args])
    if args[0] == "predict":  # per-image errors go to stdout; the exit code says none worked
        assert result.returncode == 2 and "error" in result.stdout
        return
    assert message in _one_error_line(result)


@pytest.mark.parametrize("options, message", [
    ({"arch": "resnet"}, "unknown architecture 'resnet'"),
    ({"arch_args": {"depth": 3}}, "arch_args {'depth': 3} do not fit fernet"),
    ({"epochs": "10"}, "training option epochs must be of type int, not '10'"),
    ({"nesterov": 1}, "training option nesterov must be of type bool"),
    ({"classes": ["sad"]}, "at least two different emotions"),
    ({"classes": ["sad", "happy"]}, "classes must be distinct and in the order"),
    ({"augment": {"blur": 1.0}}, "unknown augmentation(s): blur"),
    ({"augment": {"rotate": "15"}}, "augmentation strengths must be numbers"),
    ({"data": "/no/such/archive.zip"}, "data not found: /no/such/archive.zip"),
    ({"data": "synthetic:12"}, "synthetic size must be between 70 and 200000"),
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
    assert "shipped model" in line and "train" in line and "\n" not in line
