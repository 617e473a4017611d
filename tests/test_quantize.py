"""int8 inference: calibration stored by training and shipping, the runner load_model picks, and its accuracy."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fercore.card import ship
from fercore.checkpoint import CALIBRATION, CheckpointError, load_model, read_checkpoint, save_checkpoint
from fercore.cli import main
from fercore.data import load_data
from fercore.evaluate import evaluate_faces


def _uncalibrated(checkpoint: Path, tmp_path: Path) -> Path:
    data = read_checkpoint(checkpoint)
    data.pop(CALIBRATION)
    path = tmp_path / "uncalibrated.pt"
    save_checkpoint(path, data)
    return path


def test_training_stores_calibration_and_int8_is_the_cpu_default(tiny_checkpoint: Path) -> None:
    raw = torch.load(tiny_checkpoint, weights_only=True)
    assert raw[CALIBRATION] and all(isinstance(v, torch.Tensor) for v in raw[CALIBRATION].values())
    engine = torch.backends.quantized.engine
    loaded = load_model(tiny_checkpoint)
    assert loaded.dtype == "int8" and loaded.runner is not loaded.model
    assert torch.backends.quantized.engine == engine  # the process-wide engine is left as it was
    assert load_model(tiny_checkpoint, precision="float").dtype in ("bfloat16", "float32")


def test_int8_agrees_with_the_float_model(tiny_checkpoint: Path) -> None:
    val = load_data("synthetic:2100").split("val")
    as_int8, as_float = load_model(tiny_checkpoint), load_model(tiny_checkpoint, precision="float")
    int8_report, float_report = evaluate_faces(as_int8, val), evaluate_faces(as_float, val)
    assert int8_report.dtype == "int8" and float_report.dtype != "int8"
    agreement = (int8_report.predictions == float_report.predictions).mean()
    assert agreement >= 0.9
    assert abs(int8_report.accuracy - float_report.accuracy) <= 0.05
    assert np.abs(int8_report.probabilities - float_report.probabilities).max() < 0.2


def test_uncalibrated_checkpoint_runs_float_and_refuses_int8(tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = _uncalibrated(tiny_checkpoint, tmp_path)
    assert load_model(path).dtype != "int8"
    with pytest.raises(CheckpointError, match="no int8 calibration"):
        load_model(path, precision="int8")
    with pytest.raises(CheckpointError, match="unknown precision"):
        load_model(path, precision="int4")


@pytest.mark.parametrize("damage", ["missing layers", "wrong shapes"])
def test_broken_calibration_falls_back_to_float_or_refuses_int8(tiny_checkpoint: Path, tmp_path: Path,
                                                                 damage: str) -> None:
    data = read_checkpoint(tiny_checkpoint)
    calibration = data[CALIBRATION]
    if damage == "missing layers":
        data[CALIBRATION] = {k: v for i, (k, v) in enumerate(calibration.items()) if i % 2}
    else:
        data[CALIBRATION] = {k: torch.zeros(3, 3) if k.endswith("min_val") else v for k, v in calibration.items()}
    path = tmp_path / "broken.pt"
    save_checkpoint(path, data)
    assert load_model(path).dtype != "int8"  # auto: the float model still answers
    with pytest.raises(CheckpointError, match="cannot run in int8"):
        load_model(path, precision="int8")


def test_cli_int8_of_an_uncalibrated_checkpoint_is_one_line(tiny_checkpoint: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    code = main(["evaluate", "--checkpoint", str(_uncalibrated(tiny_checkpoint, tmp_path)), "--data",
                 "synthetic:2100", "--precision", "int8"])
    err = capsys.readouterr().err
    assert code == 2 and "no int8 calibration" in err and len(err.strip().splitlines()) == 1


def test_ship_calibrates_an_uncalibrated_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    card = ship(_uncalibrated(tiny_checkpoint, tmp_path), "synthetic:2100", tmp_path / "shipped.pt",
                run_dir=tiny_checkpoint.parent)
    assert CALIBRATION in torch.load(tmp_path / "shipped.pt", weights_only=True)
    assert card["inference_ms_per_face"]["dtype"] == "int8" and card["validation"]["float_tta"]["dtype"] != "int8"
    assert "int8" in (tmp_path / "README.md").read_text()


def test_cli_precision_flag(tiny_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", "synthetic:2100", "--split", "val",
                 "--precision", "float", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] != "int8"
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", "synthetic:2100", "--split", "val",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "int8"
