"""Training runs: learning, run directory contents, stop and exact resume, failures."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image_tree

from fercore import hardware
from fercore import train as train_module
from fercore.augment import AugmentConfig
from fercore.checkpoint import load_model, read_checkpoint
from fercore.config import TrainConfig, preset
from fercore.errors import UserError
from fercore.evaluate import evaluate
from fercore.runs import RunDir, list_runs
from fercore.train import resume_training, run_training


def _cfg(**overrides: object) -> TrainConfig:
    base = dict(data="synthetic:700", arch="basic", epochs=2, batch_size=32, optimizer="sgd", lr=0.02,
                schedule="cosine", threads=1, amp="off")
    return TrainConfig.from_dict({**base, **overrides})


def test_short_run_learns_synthetic_faces_well_above_chance(tiny_checkpoint: Path) -> None:
    report = evaluate(tiny_checkpoint, "synthetic:2100", "test")
    assert report.accuracy > 0.5  # chance is 1/7


def test_run_directory_has_everything(tiny_checkpoint: Path) -> None:
    run = RunDir(tiny_checkpoint.parent)
    assert run.status()["state"] == "finished"
    assert TrainConfig.from_dict(run.config()).arch == "basic"
    epochs = run.epochs()
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5, 6]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"):
        assert all(isinstance(e[key], float) for e in epochs)
    assert any(r["type"] == "progress" for r in run.metrics())
    best = read_checkpoint(run.file("best.pt"))  # weights_only=True inside
    assert best["metrics"]["val_acc"] == max(e["val_acc"] for e in epochs)
    assert "train_state" not in best and "train_state" in read_checkpoint(run.file("last.pt"))
    assert best["classes"] == list(run.config()["classes"]) and len(best["data_fingerprint"]) == 16
    assert not run.file("run.lock").exists()
    assert list_runs(run.path.parent)[0].name == run.name


def test_checkpoint_loads_with_plain_weights_only(tiny_checkpoint: Path) -> None:
    data = torch.load(tiny_checkpoint, weights_only=True)
    assert data["format"] == "fercore-checkpoint" and data["arch"] == "basic"
    assert load_model(tiny_checkpoint).classes == tuple(data["classes"])


def _stop_at(run_dir: Path, epoch: int, step: int):
    def on_progress(record: dict) -> None:
        if record["type"] == "progress" and record["epoch"] == epoch and record["step"] == step:
            RunDir(run_dir).request_stop()
    return on_progress


@pytest.mark.parametrize("swa_epochs", [0, 2])  # with weight averaging, stopped after its first average
def test_stop_then_resume_equals_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      swa_epochs: int) -> None:
    monkeypatch.setattr(train_module, "PROGRESS_SECONDS", 0.0)
    cfg = _cfg(epochs=3, swa_epochs=swa_epochs)
    run_training(cfg, tmp_path / "straight")
    stop_epoch = 3 if swa_epochs else 2
    stopped = run_training(cfg, tmp_path / "resumed", on_progress=_stop_at(tmp_path / "resumed", stop_epoch, 5))
    assert stopped["stopped"]
    run = RunDir(tmp_path / "resumed")
    assert run.status()["state"] == "stopped" and not run.file("STOP").exists()
    assert read_checkpoint(run.file("last.pt"))["train_state"]["position"]["step"] == 5
    # records logged after last.pt by a process killed before its next save: the resume must drop them
    run.log({"type": "progress", "epoch": stop_epoch, "step": 6, "steps": 6})
    run.log({"type": "epoch", "epoch": stop_epoch, "train_loss": 9.9, "val_acc": 0.01})
    resume_training(tmp_path / "resumed")
    for name in ("last.pt", "best.pt"):
        straight = read_checkpoint(tmp_path / "straight" / name)["state_dict"]
        resumed = read_checkpoint(tmp_path / "resumed" / name)["state_dict"]
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), (name, key)
    a, b = RunDir(tmp_path / "straight").epochs(), run.epochs()
    assert [e["val_acc"] for e in a] == [e["val_acc"] for e in b]
    assert [e["train_loss"] for e in a] == pytest.approx([e["train_loss"] for e in b], rel=1e-6)


def test_weight_averaging_keeps_the_mean_of_the_last_epochs_with_fresh_norm_statistics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a constant schedule makes a 1-epoch run the first epoch of a 2-epoch one (randomness: seed, epoch, step)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)  # evaluated in float32, as the run validated
    plain = _cfg(data="synthetic:2100", epochs=1, schedule="constant", lr=0.01)
    run_training(plain, tmp_path / "one")
    run_training(dataclasses.replace(plain, epochs=2), tmp_path / "two")
    averaged = dataclasses.replace(plain, epochs=2, swa_epochs=2)
    run_training(averaged, tmp_path / "swa")
    weights = [read_checkpoint(tmp_path / run / "last.pt")["state_dict"] for run in ("one", "two")]
    last = read_checkpoint(tmp_path / "swa" / "last.pt")
    assert all(torch.equal(last["state_dict"][k], weights[1][k]) for k in weights[1])  # the training is unchanged
    mean = last["train_state"]["weight_average"]
    assert mean["count"] == 2
    conv = "features.0.weight"
    assert torch.allclose(mean["mean"][conv], (weights[0][conv] + weights[1][conv]) / 2, atol=1e-6)
    epochs = RunDir(tmp_path / "swa").epochs()
    assert [e["averaged_epochs"] for e in epochs] == [1, 2]
    # last.pt holds the trained weights: its metrics are theirs, validated beside the average's
    assert last["metrics"]["val_acc"] == epochs[-1]["trained"]["val_acc"] and "averaged_epochs" not in last["metrics"]
    trained = evaluate(tmp_path / "swa" / "last.pt", "synthetic:2100", "val", tta=False, precision="float")
    assert trained.accuracy == pytest.approx(last["metrics"]["val_acc"], abs=1e-6)
    best = read_checkpoint(tmp_path / "swa" / "best.pt")
    used = best["metrics"]["averaged_epochs"]
    expected = sum(w[conv] for w in weights[:used]) / used
    assert torch.allclose(best["state_dict"][conv], expected, atol=1e-6)
    norm = "features.1.running_mean"  # measured anew on the training faces, not the last epoch's
    assert not torch.allclose(best["state_dict"][norm], weights[used - 1][norm])
    report = evaluate(tmp_path / "swa" / "best.pt", "synthetic:2100", "val", tta=False, precision="float")
    assert report.accuracy == pytest.approx(best["metrics"]["val_acc"], abs=1e-6)  # the model the run validated
    with pytest.raises(UserError, match="weight-averaging epochs"):
        dataclasses.replace(plain, swa_epochs=2).validate()


def test_weight_averaging_measures_norms_on_full_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A last batch of one face would break BatchNorm1d in training mode (fernet's head has one): it is left out,
    as in training."""
    from fercore.data import load_data
    from fercore.labels import EMOTIONS
    from fercore.swa import WeightAverage

    train_faces = len(load_data("synthetic:700").split("train", EMOTIONS, 0.1, 0).labels)
    batch = train_faces - 1  # one full batch, and one face over
    sizes: list[int] = []
    measure = WeightAverage.averaged_model
    monkeypatch.setattr(WeightAverage, "averaged_model",
                        lambda self, model, batches: measure(self, model, [sizes.append(len(b)) or b for b in batches]))
    cfg = _cfg(arch="fernet", arch_args={"widths": [4, 8, 16, 32]}, epochs=1, batch_size=batch, swa_epochs=1)
    assert run_training(cfg, tmp_path / "r")["epochs"] == 1
    assert sizes == [batch]


def test_validation_runs_at_the_runs_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bool] = []
    validate = train_module.predict_proba
    monkeypatch.setattr(train_module, "predict_proba",
                        lambda *args, amp=True, **kwargs: asked.append(amp) or validate(*args, amp=amp, **kwargs))
    run_training(_cfg(epochs=1, amp="off"), tmp_path / "fp32")
    run_training(_cfg(epochs=1, amp="on"), tmp_path / "amp")
    assert asked == [False, True]


def test_a_warm_started_run_resumes_without_the_checkpoint_it_started_from(tiny_checkpoint: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(train_module, "PROGRESS_SECONDS", 0.0)
    start = tmp_path / "start.pt"
    shutil.copy(tiny_checkpoint, start)
    cfg = _cfg(data="synthetic:2100", epochs=2, init_from=str(start))
    assert run_training(cfg, tmp_path / "warm", on_progress=_stop_at(tmp_path / "warm", 1, 3))["stopped"]
    start.unlink()  # its run deleted, say
    assert resume_training(tmp_path / "warm")["epochs"] == 2


def test_existing_run_dir_is_refused_and_resume_needs_last(tmp_path: Path) -> None:
    run_training(_cfg(epochs=1), tmp_path / "r")
    with pytest.raises(UserError, match="holds a finished run: choose another --run-dir"):
        run_training(_cfg(epochs=1), tmp_path / "r")
    with pytest.raises(UserError, match="has finished: nothing to resume"):
        resume_training(tmp_path / "r")
    RunDir(tmp_path / "r").write_status(state="stopped")
    with pytest.raises(UserError, match="holds a run that can continue: use --resume"):
        run_training(_cfg(epochs=1), tmp_path / "r")
    recipe = (tmp_path / "r" / "config.json").read_bytes()
    (tmp_path / "r" / "config.json").write_text("{\"data\": ")  # damaged: the recipe is unknown
    with pytest.raises(UserError, match="config.json is missing or unreadable, so its recipe is unknown"):
        resume_training(tmp_path / "r")
    (tmp_path / "r" / "config.json").write_bytes(recipe)
    with pytest.raises(UserError, match="no run at"):
        resume_training(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="nothing to resume in .*empty: it has no last.pt"):
        resume_training(tmp_path / "empty")


def test_bad_input_found_while_starting_leaves_no_run_behind(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken.zip").write_bytes(b"not a zip")  # passes the cheap checks, fails when read
    with pytest.raises(UserError, match="not a valid zip"):
        run_training(_cfg(data=str(tmp_path / "broken.zip"), epochs=1), tmp_path / "r")
    assert not (tmp_path / "r").exists()

    def unreadable(source: str) -> None:  # as a data file without read permission is (tests run as root)
        raise PermissionError(13, "Permission denied", source)
    monkeypatch.setattr("fercore.train.load_data", unreadable)
    with pytest.raises(PermissionError):
        run_training(_cfg(epochs=1), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_run_dir_that_failed_before_its_first_save_can_be_used_again(tmp_path: Path) -> None:
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    (tmp_path / "r").mkdir()  # made by someone else (the app makes it first): kept, with the failure in it
    with pytest.raises(UserError, match="not a valid zip"):
        run_training(_cfg(data=str(tmp_path / "broken.zip"), epochs=1), tmp_path / "r")
    status = RunDir(tmp_path / "r").status()
    assert status["state"] == "failed" and "not a valid zip" in status["error"]
    assert RunDir(tmp_path / "r").reusable()
    assert run_training(_cfg(epochs=1), tmp_path / "r")["epochs"] == 1
    with pytest.raises(UserError, match="holds a finished run"):  # a run with a save is never overwritten
        run_training(_cfg(epochs=1), tmp_path / "r")


def test_a_reused_run_dir_keeps_nothing_of_the_earlier_attempt(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path / "r")
    run.write_config({"arch": "basic"})
    run.write_status(state="failed", error="No space left on device")  # it saved best.pt, then failed on last.pt
    for name in ("best.pt", train_module.TEACHER_TARGETS):
        run.file(name).write_bytes(b"the earlier attempt's")
    monkeypatch.setattr(train_module, "PROGRESS_SECONDS", 0.0)  # a progress record after every step
    stopped = run_training(_cfg(epochs=1), run.path,
                           on_progress=lambda record: record["type"] == "progress" and run.request_stop())
    assert stopped["stopped"] and run.file("last.pt").exists()  # stopped in its first epoch: no best.pt of its own
    assert not run.file("best.pt").exists() and not run.file(train_module.TEACHER_TARGETS).exists()


def test_an_interrupt_while_starting_leaves_a_reusable_directory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(source: str) -> None:
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "load_data", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_training(_cfg(epochs=1), tmp_path / "r")
    run = RunDir(tmp_path / "r")
    assert run.status()["state"] == "interrupted" and run.reusable() and not run.file("run.lock").exists()
    with pytest.raises(UserError, match="ended before its first save; start it again"):
        resume_training(run.path)
    assert run_training(_cfg(epochs=1), run.path)["epochs"] == 1


def test_a_run_in_use_by_a_live_process_is_refused(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "busy")
    run.path.mkdir()
    run.file("run.lock").write_text(str(os.getppid()))  # a live process that is not us
    with pytest.raises(UserError, match="already in use"):
        run_training(_cfg(epochs=1), run.path)


def test_processes_read_and_take_a_runs_lock_one_at_a_time(tmp_path: Path) -> None:
    import fcntl
    import threading

    run = RunDir(tmp_path / "contended")
    run.path.mkdir()
    guard = os.open(run.path, os.O_RDONLY)
    fcntl.flock(guard, fcntl.LOCK_EX)  # another process in the middle of taking it
    taking = threading.Thread(target=run.acquire)
    taking.start()
    taking.join(0.5)
    assert taking.is_alive() and not run.file("run.lock").exists()  # it waits its turn
    os.close(guard)
    taking.join(5)
    assert not taking.is_alive() and run.file("run.lock").read_text().startswith(f"{os.getpid()} ")
    run.release()


def test_a_pid_taken_by_another_process_after_a_reboot_is_not_the_run(tmp_path: Path) -> None:
    from fercore.runs import process_token

    run = RunDir(tmp_path / "rebooted")
    run.path.mkdir()
    alive = os.getppid()  # a live process standing in for whatever got the dead trainer's pid
    assert process_token(alive)  # Linux: /proc tells processes apart
    run.file("run.lock").write_text(f"{alive} another-boot:1234")
    run.write_status(state="running", pid=alive, pid_token="another-boot:1234")
    assert run.status()["state"] == "interrupted"
    run.write_status(pid_token=process_token(alive))
    assert run.status()["state"] == "running"  # the same process: still the run's
    run.write_status(state="stopped")
    assert run_training(_cfg(epochs=1), run.path)["epochs"] == 1  # the lock of another boot does not hold it


def test_stale_lock_and_status_of_a_dead_process(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "dead")
    run.path.mkdir()
    run.file("run.lock").write_text("999999999")
    run.write_status(state="running", pid=999999999)
    assert run.status()["state"] == "interrupted"
    run_training(_cfg(epochs=1), run.path)  # the stale lock does not block a new run
    assert run.status()["state"] == "finished"


def test_diverging_loss_fails_the_run_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="loss became nan|loss became inf"):
        run_training(_cfg(lr=10.0, schedule="constant", epochs=2), tmp_path / "nan")
    status = RunDir(tmp_path / "nan").status()
    assert status["state"] == "failed" and "learning rate" in status["error"]


def test_a_diverged_validation_fails_the_run_before_saving_it(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def validate(self: train_module.Trainer, model: object) -> dict[str, float]:
        return {"val_loss": float("nan"), "val_acc": 0.14, "val_macro_f1": 0.03}
    monkeypatch.setattr(train_module.Trainer, "_validate", validate)
    with pytest.raises(UserError, match="validation loss became nan in epoch 1: lower the learning rate$"):
        run_training(_cfg(epochs=2), tmp_path / "r")
    run = RunDir(tmp_path / "r")
    assert run.status()["state"] == "failed" and not run.file("best.pt").exists()


def test_missing_data_is_refused_before_a_run_exists(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data not found"):
        run_training(_cfg(data=str(tmp_path / "missing")), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("schedule, optimizer", [("onecycle", "adamw"), ("plateau", "sgd"), ("exponential", "sgd")])
def test_every_schedule_and_optimizer_runs(tmp_path: Path, schedule: str, optimizer: str) -> None:
    result = run_training(_cfg(schedule=schedule, optimizer=optimizer, epochs=2, class_weights="balanced",
                               label_smoothing=0.1, early_stop=1), tmp_path / schedule)
    assert 1 <= result["epochs"] <= 2


@pytest.mark.parametrize("epochs, batch_size", [(1, 100), (5, 504)])  # 504 training faces: 5 steps in all
def test_a_one_cycle_of_five_steps_trains(tmp_path: Path, epochs: int, batch_size: int) -> None:
    result = run_training(_cfg(schedule="onecycle", epochs=epochs, batch_size=batch_size), tmp_path / "r")
    assert result["epochs"] == epochs


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_the_last_epoch_reports_the_learning_rate_its_last_step_used(tmp_path: Path, schedule: str) -> None:
    cfg = _cfg(schedule=schedule, epochs=2)
    run_training(cfg, tmp_path / "r")
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    steps = 504 // cfg.batch_size  # synthetic:700 keeps 504 training faces
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    schedule_alone = train_module._scheduler(cfg, optimizer, steps)
    for _ in range(cfg.epochs * steps - 1):  # to the last step (the one-cycle's lr would rise again past it)
        optimizer.step()
        schedule_alone.step()
    assert [r for r in records if r.get("type") == "epoch"][-1]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])


def test_a_run_records_the_threads_it_runs_on_not_more_than_the_cores(tmp_path: Path) -> None:
    run_training(_cfg(epochs=1, threads=64), tmp_path / "r")
    assert RunDir(tmp_path / "r").threads() == hardware.usable_cores() < 64  # what the app counts as taken


def test_a_resume_that_cannot_start_says_why_in_the_runs_status(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "PROGRESS_SECONDS", 0.0)
    data = write_image_tree(tmp_path / "faces", per_class=6)
    run_dir = tmp_path / "r"
    assert run_training(_cfg(data=str(data), epochs=2, batch_size=8), run_dir,
                        on_progress=_stop_at(run_dir, 1, 2))["stopped"]
    shutil.rmtree(data)
    with pytest.raises(UserError, match="data not found"):
        resume_training(run_dir)
    status = RunDir(run_dir).status()
    assert status["state"] == "failed" and status["error"].startswith("data not found")  # the app shows it
    assert (run_dir / "last.pt").is_file()


def test_early_stop_ends_patience_epochs_after_the_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scores = iter([0.3, 0.5, 0.4, 0.5, 0.45, 0.9, 0.9])  # best at epoch 2, then two epochs without a better one

    def validate(self: train_module.Trainer, model: object) -> dict[str, float]:
        return {"val_loss": 1.0, "val_acc": next(scores), "val_macro_f1": 0.1}
    monkeypatch.setattr(train_module.Trainer, "_validate", validate)
    result = run_training(_cfg(epochs=7, early_stop=2), tmp_path / "r")
    assert result == {"best_val_acc": 0.5, "best_epoch": 2, "epochs": 4}
    assert [e["val_acc"] for e in RunDir(tmp_path / "r").epochs()] == [0.3, 0.5, 0.4, 0.5]
    RunDir(tmp_path / "r").write_status(state="interrupted")  # killed after its last epoch, before it finished
    assert resume_training(tmp_path / "r") == result  # it stopped early: the resume trains no further epoch
    assert len(RunDir(tmp_path / "r").epochs()) == 4


def test_the_eta_counts_validation_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statuses: list[dict] = []
    write_status = RunDir.write_status

    def recording(self: RunDir, **fields: object) -> None:
        statuses.append(fields)
        write_status(self, **fields)

    def slow_validate(self: train_module.Trainer, model: object) -> dict[str, float]:
        time.sleep(0.3)
        return {"val_loss": 1.0, "val_acc": 0.5, "val_macro_f1": 0.1}
    monkeypatch.setattr(RunDir, "write_status", recording)
    monkeypatch.setattr(train_module.Trainer, "_validate", slow_validate)
    run_training(_cfg(epochs=2), tmp_path / "r")
    first = RunDir(tmp_path / "r").epochs()[0]
    after_first = next(s for s in statuses if s.get("state") == "running" and s["epoch"] == 2 and s["step"] == 0)
    assert after_first["eta_s"] >= first["seconds"] + 0.3  # one epoch left: its training and its validation


def test_class_weights_favour_rare_classes() -> None:
    import numpy as np

    counts = np.array([400, 100, 25])
    assert train_module._class_weights(counts, "none") is None
    balanced = train_module._class_weights(counts, "balanced")
    assert balanced.tolist() == pytest.approx((np.array([1, 4, 16]) / 7).tolist())  # 1/count, mean 1
    sqrt = train_module._class_weights(counts, "sqrt")
    assert sqrt.tolist() == pytest.approx((np.array([1, 2, 4]) / (7 / 3)).tolist())


@pytest.mark.parametrize("distilled", [False, True])
def test_a_mixed_batch_is_scored_against_both_labels_by_lam(distilled: bool) -> None:
    from torch import nn

    from fercore.distill import DistillationLoss
    from fercore.models import build
    from fercore.train import training_step

    torch.manual_seed(0)
    model = build("basic", 7)
    x, y = torch.randn(8, 1, 48, 48), torch.randint(0, 7, (8,))
    soft = torch.softmax(torch.randn(8, 7), 1) if distilled else None
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    if distilled:
        loss_fn = DistillationLoss(loss_fn, 0.7)
    with torch.no_grad():
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.manual_seed(1)  # the same dropout in both passes
        logits = model(x)
        own, partner = ((loss_fn(logits, y), loss_fn(logits, y.flip(0))) if soft is None else
                        (loss_fn(logits, y, soft), loss_fn(logits, y.flip(0), soft.flip(0))))
    model.load_state_dict(state)  # the forward pass above moved the norms' running statistics
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    torch.manual_seed(1)
    mixed_soft = None if soft is None else soft * 0.3 + soft.flip(0) * 0.7  # the mix's targets, as the trainer gives
    loss, _ = training_step(model, optimizer, loss_fn, x, y, None, mixed_soft, lam=0.3)
    assert float(loss) == pytest.approx(0.3 * float(own) + 0.7 * float(partner), rel=1e-5)
    assert float(own) != pytest.approx(float(partner))


def test_a_run_with_mixup_and_cutmix_learns(tmp_path: Path) -> None:
    mixing = {**AugmentConfig.off().to_dict(), "mixup": 0.4, "cutmix": 1.0}
    cfg = _cfg(data="synthetic:2100", epochs=6, batch_size=64, optimizer="adamw", lr=3e-3, schedule="onecycle",
               augment=mixing)  # measured: 45% (72% unmixed, the same 6 epochs)
    run_training(cfg, tmp_path / "run")
    assert evaluate(tmp_path / "run" / "best.pt", "synthetic:2100", "val").accuracy > 0.3  # chance: 1/7
    assert json.loads((tmp_path / "run" / "config.json").read_text())["augment"]["cutmix"] == 1.0


def test_a_mixing_run_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "PROGRESS_SECONDS", 0.0)
    cfg = _cfg(augment={"mixup": 0.4, "cutmix": 1.0})
    run_training(cfg, tmp_path / "straight")
    run_training(cfg, tmp_path / "resumed", on_progress=_stop_at(tmp_path / "resumed", 2, 5))
    resume_training(tmp_path / "resumed")
    straight = read_checkpoint(tmp_path / "straight" / "last.pt")["state_dict"]
    resumed = read_checkpoint(tmp_path / "resumed" / "last.pt")["state_dict"]
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)


def test_config_validation_and_presets() -> None:
    with pytest.raises(UserError, match="learning rate"):
        _cfg(lr=-1).validate()
    with pytest.raises(UserError, match="augmentation strengths must be finite and not negative"):
        _cfg(augment={"mixup": -0.2}).validate()
    with pytest.raises(UserError, match="augmentation strengths must be finite"):
        _cfg(augment={"cutmix": float("inf")}).validate()
    with pytest.raises(UserError, match="unknown training option"):
        TrainConfig.from_dict({"lr": 1, "colour": "red"})
    assert preset("fer2013").arch == "fernet"
    assert json.loads(json.dumps(preset("demo").to_dict()))["data"] == "synthetic"


def test_a_run_config_names_the_preset_it_follows() -> None:
    from fercore.config import PRESETS, matching_preset

    for name in PRESETS:
        assert matching_preset(preset(name, data="elsewhere", threads=1).to_dict()) == name
    assert matching_preset(preset("fer2013", lr=0.01).to_dict()) is None
    assert matching_preset({}) is None


def test_pixel_statistics_match_numpy() -> None:
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (50, 48, 48), dtype=np.uint8)
    mean, std = train_module._pixel_mean_std(images)
    assert mean == pytest.approx(images.mean() / 255) and std == pytest.approx((images / 255).std())


def test_init_from_a_checkpoint_starts_from_its_weights(tiny_checkpoint: Path, tmp_path: Path) -> None:
    cfg = _cfg(data="synthetic:2100", epochs=1, init_from=str(tiny_checkpoint), lr=1e-9, schedule="constant")
    run_training(cfg, tmp_path / "warm")
    before = read_checkpoint(tiny_checkpoint)["state_dict"]
    after = read_checkpoint(tmp_path / "warm" / "last.pt")["state_dict"]
    conv = "features.0.weight"
    assert torch.allclose(before[conv], after[conv], atol=1e-6)  # a near-zero lr keeps the loaded weights
    with pytest.raises(UserError, match=f"--init {tiny_checkpoint} is a basic for angry, .*; this run is a fernet "
                                        "\\(widths 16-32-64-128\\) for"):
        run_training(_cfg(arch="fernet", arch_args={"widths": [16, 32, 64, 128]}, init_from=str(tiny_checkpoint)),
                     tmp_path / "mismatch")
    with pytest.raises(UserError, match=f"--init {tiny_checkpoint} learned [0-9,]+ of this run's [0-9,]+ validation "
                                        "faces: .*; train with its carve \\(--val-fraction 0.1, and split_seed 0"):
        run_training(_cfg(data="synthetic:2100", val_fraction=0.2, init_from=str(tiny_checkpoint)), tmp_path / "leaky")
    rng = np.random.default_rng(0)  # data with its own validation rows: no carve, so any fraction will do
    rows = [f"{label},{' '.join(map(str, rng.integers(0, 256, 2304)))},{usage}" for label in range(7)
            for usage in ["Training"] * 8 + ["PublicTest"] * 2]
    (tmp_path / "faces.csv").write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    run_training(_cfg(data=str(tmp_path / "faces.csv"), epochs=1), tmp_path / "csv")
    warm = _cfg(data=str(tmp_path / "faces.csv"), epochs=1, val_fraction=0.2,
                init_from=str(tmp_path / "csv" / "best.pt"))
    assert run_training(warm, tmp_path / "csv-warm")["epochs"] == 1


def test_measuring_a_step_restores_the_thread_count() -> None:
    from fercore.train import measure_step_seconds

    torch.set_num_threads(1)  # what conftest runs the tests with
    assert measure_step_seconds(TrainConfig(arch="basic", batch_size=8, amp="off"), 7, threads=2, repeats=2) > 0
    assert torch.get_num_threads() == 1


def test_a_timed_step_runs_the_live_teachers_forward_pass_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from fercore import models
    from fercore.train import measure_step_seconds

    passes: list[str] = []
    build = models.build

    def counted(name: str, num_classes: int, **kwargs: object) -> torch.nn.Module:
        net = build(name, num_classes, **kwargs)
        net.register_forward_hook(lambda *_: passes.append(name))
        return net

    monkeypatch.setattr(models, "build", counted)
    teacher = ("fernet", {"widths": [8, 8, 8, 8]})
    measure_step_seconds(TrainConfig(arch="basic", batch_size=8, amp="off"), 7, 1, repeats=2, teachers=[teacher])
    assert passes.count("basic") == passes.count("fernet") == 4  # two warm-up steps and two timed ones


def test_calibration_failure_leaves_a_finished_run_with_a_float_best(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no oneDNN here")

    monkeypatch.setattr(train_module, "with_calibration", broken)
    run_training(_cfg(epochs=1), tmp_path / "run")
    run = RunDir(tmp_path / "run")
    assert run.status()["state"] == "finished"
    assert "int8_calibration" not in read_checkpoint(run.file("best.pt"))
    assert load_model(run.file("best.pt")).dtype != "int8"
    assert "int8 calibration skipped: RuntimeError: no oneDNN here" in capsys.readouterr().err


def test_a_stopped_run_has_a_calibrated_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "PROGRESS_SECONDS", 0.0)
    stopped = run_training(_cfg(epochs=3), tmp_path / "run", on_progress=_stop_at(tmp_path / "run", 2, 2))
    assert stopped["stopped"]
    assert load_model(tmp_path / "run" / "best.pt").dtype == "int8"


@pytest.mark.parametrize("bf16", [True, False])
def test_a_gpu_trains_in_bfloat16_or_float32_never_unscaled_float16(monkeypatch: pytest.MonkeyPatch,
                                                                     bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert hardware.amp_dtype(torch.device("cuda")) == (torch.bfloat16 if bf16 else None)
    assert hardware.amp_dtype(torch.device("cuda"), "off") is None
