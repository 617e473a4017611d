"""Run directories that continue one another (--init): their lineage and the learning history it adds up to."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fercore.errors import UserError
from fercore.runs import RunDir, delete_run


def make_run(path: Path, val_accs: list[float], init_from: Path | None = None) -> RunDir:
    run = RunDir(path)
    run.path.mkdir(parents=True)
    run.write_config({"init_from": str(init_from) if init_from else None})
    for epoch, acc in enumerate(val_accs, 1):
        run.log({"type": "progress", "epoch": epoch, "step": 1})
        run.log({"type": "epoch", "epoch": epoch, "val_acc": acc, "seconds": 10.0})
    return run


def test_a_warm_started_run_continues_the_history_of_the_run_it_came_from(tmp_path: Path) -> None:
    first = make_run(tmp_path / "first", [0.5, 0.7, 0.6])  # best.pt holds epoch 2
    second = make_run(tmp_path / "second", [0.65, 0.72], init_from=first.file("best.pt"))
    third = make_run(tmp_path / "third", [0.73], init_from=second.file("last.pt"))
    assert [r.name for r in third.lineage()] == ["first", "second", "third"]
    history = third.history()
    assert [(e["run"], e["epoch"], e["val_acc"]) for e in history] == [
        ("first", 1, 0.5), ("first", 2, 0.7), ("second", 3, 0.65), ("second", 4, 0.72), ("third", 5, 0.73)]
    assert first.history() == [{**e, "run": "first"} for e in first.epochs()]


def test_the_best_epoch_is_the_first_of_equal_ones(tmp_path: Path) -> None:
    first = make_run(tmp_path / "first", [0.5, 0.7, 0.7])
    second = make_run(tmp_path / "second", [0.71], init_from=first.file("best.pt"))
    assert [e["epoch"] for e in second.history()] == [1, 2, 3]


def test_lineage_stops_at_a_missing_or_circular_source(tmp_path: Path) -> None:
    orphan = make_run(tmp_path / "orphan", [0.5], init_from=tmp_path / "deleted" / "best.pt")
    assert orphan.lineage() == [orphan] and [e["epoch"] for e in orphan.history()] == [1]
    loop = make_run(tmp_path / "loop", [0.5], init_from=tmp_path / "loop" / "last.pt")
    assert loop.lineage() == [loop]


def test_a_shipped_history_keeps_the_run_names_it_was_written_with(tmp_path: Path) -> None:
    shipped = RunDir(tmp_path / "checkpoints")
    shipped.path.mkdir()
    shipped.log({"type": "epoch", "epoch": 1, "run": "first"})
    shipped.log({"type": "epoch", "epoch": 2, "run": "second"})
    assert [e["run"] for e in shipped.history()] == ["first", "second"]


def test_the_live_curves_of_a_continued_run_carry_on_from_its_source(tmp_path: Path) -> None:
    first = make_run(tmp_path / "first", [0.5, 0.7, 0.6])  # best.pt holds epoch 2
    second = make_run(tmp_path / "second", [0.65], init_from=first.file("best.pt"))
    second.log({"type": "progress", "epoch": 2, "step": 1})  # its second epoch under way
    curves = second.curves()
    assert [e["epoch"] for e in curves.history] == [1, 2, 3]
    assert [p["epoch"] for p in curves.progress] == [3, 4]
    assert len(second.epochs()) == 1  # the Live tab's epochs done: its own only
    fresh = make_run(tmp_path / "fresh", [], init_from=first.file("last.pt"))
    fresh.log({"type": "progress", "epoch": 1, "step": 1})  # no epoch of its own yet
    assert [p["epoch"] for p in fresh.curves().progress] == [4]


def test_a_runs_threads_are_its_status_s_after_a_resume(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", [0.5])
    run.write_config({"threads": 2})
    assert run.threads() == 2
    run.write_status(state="running", threads=1)  # resumed with --threads 1
    assert run.threads() == 1


def test_delete_refuses_a_training_run_and_removes_a_finished_one(tmp_path: Path) -> None:
    busy = make_run(tmp_path / "busy", [0.5])
    busy.write_status(state="running", pid=os.getpid())  # this test's process stands in for the trainer
    with pytest.raises(UserError, match="still running: stop it first"):
        delete_run(busy)
    assert busy.path.is_dir()
    done = make_run(tmp_path / "done", [0.5])
    done.write_status(state="finished", pid=None)
    delete_run(done)
    assert not done.path.exists() and busy.path.is_dir()


def test_a_runs_log_is_parsed_once_per_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.log({"type": "epoch", "epoch": 1, "val_acc": 0.5})
    assert len(run.epochs()) == 1
    reads: list[str] = []
    read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda path, *args, **kwargs: reads.append(path.name)
                        or read_text(path, *args, **kwargs))
    assert run.summary()["best_val_acc"] == 0.5 and len(run.history()) == 1
    assert "metrics.jsonl" not in reads  # its epochs served parsed
    run.log({"type": "epoch", "epoch": 2, "val_acc": 0.75})
    assert [e["epoch"] for e in run.epochs()] == [1, 2] and reads.count("metrics.jsonl") == 1
