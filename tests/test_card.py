"""Shipping a checkpoint with its model card."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fercore.card import ship
from fercore.cli import main
from fercore.evaluate import evaluate


def test_ship_writes_checkpoint_card_and_metrics(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "checkpoints" / "fer2013.pt"
    card = ship(tiny_checkpoint, "synthetic:2100", out)
    stored = torch.load(out, weights_only=True)["card"]
    assert stored["parameters"] == card["parameters"] > 0
    val = evaluate(tiny_checkpoint, "synthetic:2100", "val")
    assert stored["validation"]["tta"]["accuracy"] == pytest.approx(val.accuracy)
    assert stored["training"]["epochs"] == 6 and stored["inference_ms_per_face"]["batch1"] > 0
    readme = (out.parent / "README.md").read_text()
    assert f"{val.accuracy:.2%}" in readme and "| **happy** |" in readme
    assert (out.parent / "metrics.jsonl").read_text().count('"type": "epoch"') == 6


def test_ship_refuses_other_data(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["ship", "--checkpoint", str(tiny_checkpoint), "--data", "synthetic:1400",
                 "--out", str(tmp_path / "x.pt")])
    assert code == 2 and "not the data this checkpoint was trained on" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_card_markdown_tables_are_well_formed(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ship(tiny_checkpoint, "synthetic:2100", tmp_path / "fer2013.pt")
    lines = (tmp_path / "README.md").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| true \\ predicted |")))
    confusion = lines[start:start + 9]
    assert confusion[1] == "|---" * 8 + "|"
    assert all(row.count("|") == 9 for row in confusion)
