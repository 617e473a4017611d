"""Shipping a checkpoint with its model card."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fercore.card import card_markdown, ship
from fercore.checkpoint import model_from_checkpoint, read_checkpoint
from fercore.cli import main
from fercore.compare import compare
from fercore.errors import UserError
from fercore.evaluate import evaluate
from fercore.metrics import Calibration
from fercore.temperature import fit_temperature, sharpen


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
    trained_on = torch.load(tiny_checkpoint, weights_only=True)["trained_on"]
    assert stored["training"]["hardware"].startswith(f"{trained_on['processor']}, 1 thread(s)")
    assert readme.startswith("# Model card: `fer2013.pt`") and "`synthetic:2100`, " in readme
    assert re.search(r"\| training time \| (\d+ s|\d+\.\d min) on ", readme)  # a short run's, not "0.00 h"
    assert "also training faces" not in readme  # the synthetic faces are all different
    shipped = torch.load(out, weights_only=True)
    fitted, one_view = card["temperature"]["value"], card["temperature"]["one_view"]["value"]
    assert shipped["temperature"] == {"tta": fitted, "one_view": one_view}
    views = ((True, fitted, card["temperature"]), (False, one_view, card["temperature"]["one_view"]))
    for tta, temperature, fit in views:
        unscaled = evaluate(tiny_checkpoint, "synthetic:2100", "val", tta)  # the run's checkpoint has no temperature
        assert fit["unscaled"] == pytest.approx(unscaled.calibration().to_json())
        assert temperature == fit_temperature(unscaled.probabilities, unscaled.labels)
        scaled = evaluate(out, "synthetic:2100", "val", tta)
        np.testing.assert_allclose(scaled.probabilities, sharpen(unscaled.probabilities, temperature), atol=1e-5)
        assert scaled.accuracy == unscaled.accuracy  # scaling changes no label
    unscaled, scaled = evaluate(tiny_checkpoint, "synthetic:2100", "val"), evaluate(out, "synthetic:2100", "val")
    assert (f"| validation confidence | probabilities scaled by temperature {fitted:.2f} (fitted on these faces by "
            f"log-loss); calibration error {100 * unscaled.calibration().error:.1f} points unscaled, ") in readme
    one_view_unscaled = Calibration.from_json(card["temperature"]["one_view"]["unscaled"]).error
    assert (f"; one view (webcam, export): temperature {one_view:.2f}, calibration error "
            f"{100 * one_view_unscaled:.1f} points unscaled, ") in readme
    del stored["temperature"]["one_view"]  # a card shipped with one temperature for both
    assert "| validation confidence | probabilities scaled by temperature" in card_markdown(stored, "fer2013.pt")
    assert "one view" not in card_markdown(stored, "fer2013.pt")
    del stored["temperature"]  # a card shipped before temperatures: its measured calibration
    assert f"| validation confidence | {scaled.calibration().summary()} (with TTA) |" in card_markdown(
        stored, "fer2013.pt")
    del stored["validation"]["tta"]["calibration"]  # a card shipped before calibration was measured
    assert "validation confidence" not in card_markdown(stored, "fer2013.pt")
    stored["validation"]["tta"] |= {"seen_in_training": 3, "accuracy_unseen": 0.5}  # as FER2013's repeats make it
    assert ("; 3 of the validation faces are, pixel for pixel, also training faces (the data repeats them): "
            "50.00% with TTA on the others") in card_markdown(stored, "fer2013.pt")


def test_ship_names_the_card_after_the_file_and_never_overwrites_another_readme(tiny_checkpoint: Path,
                                                                                 tmp_path: Path) -> None:
    ship(tiny_checkpoint, "synthetic:2100", tmp_path / "models" / "mine.pt")
    assert (tmp_path / "models" / "README.md").read_text().startswith("# Model card: `mine.pt`")
    ship(tiny_checkpoint, "synthetic:2100", tmp_path / "models" / "mine.pt")  # a card may replace its own card
    card = (tmp_path / "models" / "README.md").read_bytes()
    with pytest.raises(UserError, match=r"models/README.md is the card of mine.pt, which is still there"):
        ship(tiny_checkpoint, "synthetic:2100", tmp_path / "models" / "yours.pt")
    assert (tmp_path / "models" / "README.md").read_bytes() == card and not (tmp_path / "models" / "yours.pt").exists()
    (tmp_path / "models" / "mine.pt").unlink()  # the card of a model that is gone may be replaced
    ship(tiny_checkpoint, "synthetic:2100", tmp_path / "models" / "yours.pt")
    assert (tmp_path / "models" / "README.md").read_text().startswith("# Model card: `yours.pt`")
    (tmp_path / "README.md").write_text("# My project\n")
    with pytest.raises(UserError, match="README.md is not a model card"):
        ship(tiny_checkpoint, "synthetic:2100", tmp_path / "model.pt")
    assert (tmp_path / "README.md").read_text() == "# My project\n" and not (tmp_path / "model.pt").exists()
    with pytest.raises(UserError, match="models is a directory: --out takes the file to write"):
        ship(tiny_checkpoint, "synthetic:2100", tmp_path / "models")
    run_log = (tiny_checkpoint.parent / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match="is a training run: ship into a folder of its own"):
        ship(tiny_checkpoint, "synthetic:2100", tiny_checkpoint.parent / "shipped.pt")
    assert (tiny_checkpoint.parent / "metrics.jsonl").read_bytes() == run_log


def test_a_checkpoint_shipped_without_its_run_claims_no_curves(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    loose = tmp_path / "downloads" / "model.pt"  # no run beside it: no epochs to show
    loose.parent.mkdir()
    shutil.copy(tiny_checkpoint, loose)
    out = tmp_path / "checkpoints" / "fer2013.pt"
    out.parent.mkdir()
    (out.parent / "metrics.jsonl").write_text('{"type": "epoch", "epoch": 1}\n')  # an earlier model's curves
    ship(loose, "synthetic:2100", out)
    assert not (out.parent / "metrics.jsonl").exists()
    assert "How it learned" not in (out.parent / "README.md").read_text()


def test_shipping_a_warm_started_run_keeps_the_whole_history(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from fercore.augment import AugmentConfig
    from fercore.config import TrainConfig
    from fercore.runs import RunDir
    from fercore.train import run_training

    first = RunDir(tiny_checkpoint.parent)
    cfg = TrainConfig(data="synthetic:2100", arch="basic", epochs=2, batch_size=64, optimizer="adamw", lr=1e-3,
                      threads=1, augment=AugmentConfig.off(), init_from=str(tiny_checkpoint), schedule="constant",
                      swa_epochs=2)
    run_training(cfg, tmp_path / "again")
    accs = [e["val_acc"] for e in first.epochs()]
    first_epochs = accs.index(max(accs)) + 1  # what best.pt, the warm start, had seen

    card = ship(tmp_path / "again" / "best.pt", "synthetic:2100", tmp_path / "out" / "model.pt")
    shipped = RunDir(tmp_path / "out").epochs()
    assert [e["epoch"] for e in shipped] == list(range(1, first_epochs + 3))
    assert [e["run"] for e in shipped] == [first.name] * first_epochs + ["again"] * 2
    stages = card["training"]["stages"]
    assert [(s["run"], s["epochs"], s["lr"]) for s in stages] == [(first.name, first_epochs, 3e-3), ("again", 2, 1e-3)]
    assert card["training"]["epochs"] == first_epochs + 2
    again = read_checkpoint(tmp_path / "again" / "best.pt")["metrics"]
    assert card["best_epoch"] == first_epochs + again["epoch"]  # numbered on across the runs, as the history is
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "in 2 runs, each continuing the last" in readme
    assert (f"warm-started from the weights of run {first.name} (`--init best.pt`), constant lr 0.001, averaging "
            "the weights of its last 2 epochs, seed 0" in readme)
    assert ("`python -m fercore train --data PATH --preset demo --epochs 2 --lr 0.001 --schedule constant "
            "--weight-decay 0.0005 --label-smoothing 0.1 --swa-epochs 2 --no-augment` (run `again`)") in readme
    assert (f"| best epoch | {card['best_epoch']} of {first_epochs + 2}: the average of the weights of "
            f"{again['averaged_epochs']} epochs |" in readme)
    assert f"(run `{first.name}`): {first_epochs} epochs from scratch, onecycle schedule peaking at lr 0.003" in readme


def test_a_warm_start_whose_runs_are_gone_is_named_not_called_from_scratch(tiny_checkpoint: Path,
                                                                           tmp_path: Path) -> None:
    import shutil

    from fercore.augment import AugmentConfig
    from fercore.config import TrainConfig
    from fercore.train import run_training

    loose = tmp_path / "downloaded.pt"  # a checkpoint outside any run directory
    shutil.copy(tiny_checkpoint, loose)
    run_training(TrainConfig(data="synthetic:2100", arch="basic", epochs=1, batch_size=64, threads=1,
                             augment=AugmentConfig.off(), init_from=str(loose)), tmp_path / "run")
    card = ship(tmp_path / "run" / "best.pt", "synthetic:2100", tmp_path / "out" / "model.pt")
    assert [s["run"] for s in card["training"]["stages"]] == ["run"]
    readme = (tmp_path / "out" / "README.md").read_text()
    assert (f"`python -m fercore train --data PATH --arch basic --epochs 1 --batch-size 64 --no-augment "
            f"--init {loose}`.") in readme


def test_the_card_of_a_distilled_run_names_its_teachers(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from fercore.augment import AugmentConfig
    from fercore.config import TrainConfig
    from fercore.train import run_training

    run_training(TrainConfig(data="synthetic:2100", arch="basic", arch_args={"widths": [8, 16, 32, 64]}, epochs=1,
                             batch_size=64, threads=1, augment=AugmentConfig.off(), teachers=[str(tiny_checkpoint)],
                             distill=0.6),
                 tmp_path / "student")
    card = ship(tmp_path / "student" / "best.pt", "synthetic:2100", tmp_path / "out" / "model.pt")
    assert card["training"]["stages"][0]["teachers"] == [str(tiny_checkpoint)]
    readme = (tmp_path / "out" / "README.md").read_text()
    assert (f"`python -m fercore train --data PATH --arch basic --epochs 1 --batch-size 64 --width 0.25 --no-augment "
            f"--teachers {tiny_checkpoint} --distill 0.6`") in readme
    assert "averaged predictions of 1 teacher model(s)" in readme and f"`{tiny_checkpoint}`" in readme
    assert "-> FC 512; this one with widths 8-16-32-64.\n" in readme  # the description, then what arch_args changed


def test_ship_half_stores_float16_weights_and_measures_them_as_stored(tiny_checkpoint: Path,
                                                                      tmp_path: Path) -> None:
    full, half = tmp_path / "full" / "model.pt", tmp_path / "half" / "model.pt"
    ship(tiny_checkpoint, "synthetic:2100", full)
    assert main(["ship", "--checkpoint", str(tiny_checkpoint), "--data", "synthetic:2100", "--out", str(half),
                 "--half"]) == 0
    weights = torch.load(half, weights_only=True)["state_dict"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert "weights stored in float16 (measured as stored)" in (half.parent / "README.md").read_text()
    assert "weights stored in" not in (full.parent / "README.md").read_text()
    as_stored = evaluate(half, "synthetic:2100", "val")  # the card's number is the stored weights' number
    card = torch.load(half, weights_only=True)["card"]
    assert card["stored_weights"] == "float16"
    assert card["validation"]["tta"]["accuracy"] == pytest.approx(as_stored.accuracy)


def test_ship_refuses_other_data(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["ship", "--checkpoint", str(tiny_checkpoint), "--data", "synthetic:1400",
                 "--out", str(tmp_path / "x.pt")])
    assert code == 2 and "not the data this checkpoint was trained on" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_ship_says_what_the_new_model_changes_against_the_one_it_replaces(
        tiny_checkpoint: Path, leaning_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "models" / "fer2013.pt"
    assert main(["ship", "--checkpoint", str(tiny_checkpoint), "--data", "synthetic:2100", "--out", str(out)]) == 0
    assert "replaced" not in capsys.readouterr().out  # nothing there before
    before = tmp_path / "before.pt"
    shutil.copy(out, before)
    assert main(["ship", "--checkpoint", str(leaning_checkpoint), "--data", "synthetic:2100", "--out", str(out)]) == 0
    expected = compare(before, out, "synthetic:2100", "val")
    assert expected.gained + expected.lost > 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line == ("against the model it replaced, on its validation faces: "
                    + expected.verdict().replace(str(out), "now").replace(str(before), "before"))


def test_card_markdown_tables_are_well_formed(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ship(tiny_checkpoint, "synthetic:2100", tmp_path / "fer2013.pt")
    lines = (tmp_path / "README.md").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| true \\ predicted |")))
    confusion = lines[start:start + 9]
    assert confusion[1] == "|---" * 8 + "|"
    assert all(row.count("|") == 9 for row in confusion)


def test_the_shipped_model_is_small_safe_to_load_and_made_by_a_named_preset() -> None:
    from fercore.config import matching_preset
    from fercore.paths import PROJECT_ROOT, SHIPPED_CHECKPOINT

    assert SHIPPED_CHECKPOINT.stat().st_size <= 25 * 1024**2
    shipped = torch.load(SHIPPED_CHECKPOINT, weights_only=True)
    card = shipped["card"]
    assert card["recipe"] == shipped["config"] and card["data_fingerprint"] == shipped["data_fingerprint"]
    stage = card["training"]["stages"][-1]
    assert stage["preset"] is not None and matching_preset(card["recipe"]) == stage["preset"]
    beside = (PROJECT_ROOT / "checkpoints" / "README.md").read_text()
    assert f"--preset {stage['preset']}" in beside and f"**{card['validation']['tta']['accuracy']:.2%}**" in beside
    assert (PROJECT_ROOT / "checkpoints" / "metrics.jsonl").read_text().count('"type": "epoch"') == \
        card["training"]["epochs"]
    applied = model_from_checkpoint(shipped, "fer2013.pt").temperature  # its card says the temperatures it applies
    assert applied.tta == card["temperature"]["value"]
    assert applied.one_view == card["temperature"]["one_view"]["value"]
    assert f"| validation confidence | probabilities scaled by temperature {applied.tta:.2f} " in beside
    assert card_markdown(card, SHIPPED_CHECKPOINT.name) == beside  # the card beside it is the one inside, drawn


def test_a_run_still_training_is_not_shipped(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import os
    import shutil

    from fercore.runs import RunDir, process_token

    run = RunDir(tmp_path / "training")
    shutil.copytree(tiny_checkpoint.parent, run.path)
    run.write_status(state="running", pid=os.getpid(), pid_token=process_token(os.getpid()))  # alive: this process
    with pytest.raises(UserError, match="is still training: ship it once it ends, or stop it first"):
        ship(run.file("best.pt"), "synthetic:2100", tmp_path / "out" / "model.pt")
    assert not (tmp_path / "out").exists()
