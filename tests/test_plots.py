"""The Plotly figure builders: what each figure holds, from plain data."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from fercore import plots
from fercore.labels import COLORS
from fercore.metrics import calibration


def epoch(n: int, **values: float) -> dict:
    return {"type": "epoch", "epoch": n, "train_loss": 2.0 / n, "train_acc": 0.2 * n, "val_loss": 2.1 / n,
            "val_acc": 0.18 * n, "val_macro_f1": 0.1 * n, "lr": 0.01 / n, **values}


def progress(n: int, step: int, steps: int = 10) -> dict:
    return {"type": "progress", "epoch": n, "step": step, "steps": steps, "train_loss": 1.0, "train_acc": 0.5,
            "lr": 0.001, "images_per_s": 100.0}


def traces(fig: go.Figure, name: str) -> list:
    return [t for t in fig.data if t.name == name]


def test_training_curves_plot_loss_accuracy_and_lr_per_epoch() -> None:
    fig = plots.training_curves([epoch(1), epoch(2)])
    assert [a.text for a in fig.layout.annotations] == ["loss", "accuracy", "learning rate"]
    train_loss, train_acc = traces(fig, "train")
    assert list(train_loss.x) == [1, 2] and list(train_loss.y) == [2.0, 1.0]
    assert list(train_acc.y) == [0.2, 0.4]
    assert list(traces(fig, "val")[1].y) == [0.18, 0.36]
    assert list(traces(fig, "lr")[0].y) == [0.01, 0.005]
    assert not traces(fig, "train (this epoch)")


def test_training_curves_show_the_epoch_in_progress_at_fractional_epochs() -> None:
    fig = plots.training_curves([epoch(1)], [progress(1, 10), progress(2, 3), progress(2, 6)])
    live_loss, live_acc = traces(fig, "train (this epoch)")
    assert list(live_loss.x) == pytest.approx([1.3, 1.6])  # epoch 1's progress is already an epoch point
    assert list(traces(fig, "lr")[0].x) == pytest.approx([1, 1.3, 1.6])


def test_training_curves_mark_where_a_warm_started_run_takes_over() -> None:
    history = [{**epoch(1), "run": "a"}, {**epoch(2), "run": "a"}, {**epoch(3), "run": "b"}]
    restarts = plots.training_curves(history).layout.shapes
    assert len(restarts) == 3 and {shape.x0 for shape in restarts} == {2.5}  # one per panel
    assert not plots.training_curves([epoch(1), epoch(2)]).layout.shapes


def test_training_curves_before_any_epoch() -> None:
    fig = plots.training_curves([], [progress(1, 5)])
    assert list(traces(fig, "train (this epoch)")[0].x) == [0.5]


def test_training_curves_of_one_epoch_show_their_points_on_axes_from_zero() -> None:
    fig = plots.training_curves([epoch(1, train_acc=0.128, val_acc=0.131)], [progress(2, 3)])
    assert {t.mode for t in fig.data} == {"lines+markers"}  # the lr's and this epoch's single points too
    many = plots.training_curves([epoch(n) for n in range(1, plots.FEW_POINTS + 2)])
    assert traces(many, "lr")[0].mode == "lines"
    assert (fig.layout.yaxis2.rangemode, fig.layout.yaxis2.tickformat) == ("tozero", ".1~%")  # not 13%, 13%, 13%
    assert fig.layout.yaxis3.rangemode == "tozero"
    overlay = plots.runs_overlay({"a": [epoch(1)]}, "val_acc")
    assert (overlay.layout.yaxis.rangemode, overlay.layout.yaxis.tickformat) == ("tozero", ".1~%")


def test_runs_overlay_has_a_line_per_run() -> None:
    fig = plots.runs_overlay({"a": [epoch(1), epoch(2)], "b": [epoch(1)]}, "val_macro_f1")
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[0].y) == [0.1, 0.2]
    assert fig.layout.yaxis.title.text == "validation macro F1"


def test_confusion_heatmap_counts_and_row_shares() -> None:
    matrix = np.array([[8, 2], [0, 0]])
    counts = plots.confusion_heatmap(matrix, ["happy", "sad"]).data[0]
    assert counts.z.tolist() == [[8, 2], [0, 0]] and list(map(list, counts.text)) == [["8", "2"], ["0", "0"]]
    shares = plots.confusion_heatmap(matrix, ["happy", "sad"], normalize=True).data[0]
    assert shares.z.tolist() == [[0.8, 0.2], [0.0, 0.0]]  # an empty row stays 0, not NaN
    assert list(shares.text[0]) == ["80%<br>8", "20%<br>2"]
    assert list(shares.x) == list(shares.y) == ["happy", "sad"]


def test_per_class_bars_group_precision_recall_f1() -> None:
    per_class = {"happy": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10},
                 "sad": {"precision": 0.5, "recall": 0.6, "f1": 0.55, "support": 5}}
    fig = plots.per_class_bars(per_class)
    assert [t.name for t in fig.data] == ["precision", "recall", "f1"]
    assert list(fig.data[1].y) == [0.8, 0.6] and fig.layout.barmode == "group"


def test_probability_bars_rank_classes_in_their_colours() -> None:
    fig = plots.probability_bars({"happy": 0.7, "sad": 0.1, "fear": 0.2}, "face 1")
    bar = fig.data[0]
    assert list(bar.y) == ["sad", "fear", "happy"]  # the top class is drawn on top
    assert list(bar.marker.color) == [COLORS["sad"], COLORS["fear"], COLORS["happy"]]
    assert list(bar.text) == ["10%", "20%", "70%"] and fig.layout.title.text == "face 1"


def test_probability_bars_write_their_share_level_beside_the_bar() -> None:
    bar = plots.probability_bars({"happy": 0.97, "sad": 0.02, "fear": 0.01}).data[0]
    assert (bar.textposition, bar.textangle, bar.cliponaxis) == ("outside", 0, False)  # never turned 90 degrees


def test_class_counts() -> None:
    fig = plots.class_counts({"angry": 3995, "disgust": 436}, "train")
    assert list(fig.data[0].x) == ["angry", "disgust"] and list(fig.data[0].y) == [3995, 436]
    assert list(fig.data[0].text) == ["3,995", "436"]


def test_epoch_ticks_are_whole_epochs() -> None:
    few = plots.runs_overlay({"a": [{"epoch": i, "val_acc": 0.5} for i in range(1, 4)]}, "val_acc")
    many = plots.runs_overlay({"a": [{"epoch": i, "val_acc": 0.5} for i in range(1, 46)]}, "val_acc")
    hundred = plots.runs_overlay({"a": [{"epoch": i, "val_acc": 0.5} for i in range(1, 101)]}, "val_acc")
    assert (few.layout.xaxis.dtick, many.layout.xaxis.dtick, hundred.layout.xaxis.dtick) == (1, 5, 10)
    assert hundred.layout.xaxis.tick0 == 0  # 10, 20, ..., 100: not 1, 11, ..., 101
    within_the_first = plots.training_curves([], [{"epoch": 1, "step": 5, "steps": 10, "train_loss": 1.0,
                                                   "train_acc": 0.3, "lr": 0.01}])
    assert tuple(within_the_first.layout.xaxis.range) == (0, 1)  # the epoch axis shows its ticks


def test_reliability_diagram_plots_accuracy_against_confidence_beside_the_diagonal() -> None:
    fit = calibration(np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.55, 0.45]]), np.array([0, 1, 1, 0]))
    bars, diagonal, model = plots.reliability_diagram(fit).data
    assert list(bars.y) == fit.counts.tolist() and bars.yaxis == "y2"
    assert list(diagonal.x) == [0, 1] and list(diagonal.y) == [0, 1]
    assert list(model.x) == pytest.approx([0.575, 0.8, 0.9]) and list(model.y) == [1, 0, 1]  # empty bins left out
    rare = np.vstack([np.tile([0.95, 0.05], (199, 1)), [[0.15, 0.85]]])  # one face of 200 in the 80-90% bin
    (_, _, line) = plots.reliability_diagram(calibration(rare, np.zeros(200, int))).data
    assert list(line.x) == pytest.approx([0.95])
