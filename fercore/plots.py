"""Plotly figure builders for the app: pure functions of plain data (testable without Streamlit or torch)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fercore.labels import COLORS
from fercore.metrics import Calibration

TRAIN_COLOR, VAL_COLOR, LR_COLOR = "#3e63dd", "#e5484d", "#12a594"
METRIC_TITLES = {
    "val_acc": "validation accuracy", "val_macro_f1": "validation macro F1", "val_loss": "validation loss",
    "train_acc": "training accuracy", "train_loss": "training loss", "lr": "learning rate",
}
FEW_POINTS = 20  # a line with at most this many points shows them as markers too
PERCENT = ".1~%"  # 12.5%, 40%: a decimal only where the ticks need one


def _layout(fig: go.Figure, height: int, **extra: Any) -> go.Figure:
    """Common size, margins and legend; the top margin keeps titles below Plotly's toolbar (it covered the third
    training curve's)."""
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=64, b=10), legend=dict(orientation="h", y=-0.3),
                      **extra)
    return fig


def _lines(points: int) -> str:
    """A line trace's mode: markers too while it has few points (a line of one point draws nothing)."""
    return "lines+markers" if points <= FEW_POINTS else "lines"


def _from_zero(fig: go.Figure, tickformat: str, **where: Any) -> None:
    """A y axis from 0 up: a point or two alone no longer zoom it to a sliver whose ticks all read the same."""
    fig.update_yaxes(rangemode="tozero", tickformat=tickformat, **where)


def _epoch_axis(fig: go.Figure) -> None:
    """Whole-epoch ticks (never 1.5) at round numbers, about ten of them at most; at least epochs 0-1 in view."""
    last = max((max(t.x) for t in fig.data if t.x is not None and len(t.x)), default=1)
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, math.inf) if s * 10 >= last)
    step = step if math.isfinite(step) else math.ceil(last / 10)
    fig.update_xaxes(title_text="epoch", tick0=1 if step == 1 else 0, dtick=step,
                     range=[0, 1] if last < 1 else None)


def training_curves(epochs: Sequence[Mapping[str, Any]], progress: Sequence[Mapping[str, Any]] = ()) -> go.Figure:
    """Loss, accuracy (train and validation) and learning rate against epochs.

    epochs are metrics.jsonl 'epoch' records; progress are 'progress' records, drawn as a dotted line at
    fractional epochs so that an epoch in progress shows before its first validation. Where the records pass
    from one run to the next (a warm-started run's history) a dashed line marks the restart.
    """
    fig = make_subplots(rows=1, cols=3, subplot_titles=("loss", "accuracy", "learning rate"))
    x = [e["epoch"] for e in epochs]
    live = [p for p in progress if p["epoch"] > (x[-1] if x else 0)]
    live_x = [p["epoch"] - 1 + p["step"] / p["steps"] for p in live]
    for col, key in ((1, "loss"), (2, "acc")):
        for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            fig.add_trace(go.Scatter(x=x, y=[e[f"{split}_{key}"] for e in epochs], name=split, mode="lines+markers",
                                     line=dict(color=color), legendgroup=split, showlegend=col == 1), row=1, col=col)
        if live:
            fig.add_trace(go.Scatter(x=live_x, y=[p[f"train_{key}"] for p in live], name="train (this epoch)",
                                     mode=_lines(len(live)), line=dict(color=TRAIN_COLOR, dash="dot"),
                                     legendgroup="live", showlegend=col == 1), row=1, col=col)
    lr_x, lr_y = x + live_x, [e["lr"] for e in epochs] + [p["lr"] for p in live]
    fig.add_trace(go.Scatter(x=lr_x, y=lr_y, name="lr", mode=_lines(len(lr_x)), line=dict(color=LR_COLOR),
                             showlegend=False), row=1, col=3)
    for before, after in zip(epochs, epochs[1:]):  # a history of several runs (see RunDir.history)
        if before.get("run") != after.get("run"):
            fig.add_vline(x=after["epoch"] - 0.5, line=dict(color="grey", dash="dash", width=1), row="all", col="all")
    _epoch_axis(fig)
    _from_zero(fig, PERCENT, row=1, col=2)
    _from_zero(fig, ".2~g", row=1, col=3)
    return _layout(fig, 320)


def runs_overlay(runs: Mapping[str, Sequence[Mapping[str, Any]]], metric: str = "val_acc") -> go.Figure:
    """One metric of several runs against epochs, one line per run (name -> its epoch records)."""
    fig = go.Figure()
    for name, epochs in runs.items():
        fig.add_trace(go.Scatter(x=[e["epoch"] for e in epochs], y=[e.get(metric) for e in epochs], name=name,
                                 mode="lines+markers"))
    _epoch_axis(fig)
    fig.update_yaxes(title_text=METRIC_TITLES.get(metric, metric))
    if "acc" in metric:
        _from_zero(fig, PERCENT)
    return _layout(fig, 360)


def confusion_heatmap(matrix: np.ndarray, classes: Sequence[str], normalize: bool = False) -> go.Figure:
    """Confusion matrix (rows = true class, columns = predicted) with counts in the cells.

    normalize colours each row by its share of the true class (recall on the diagonal) and writes the share
    above the count.
    """
    counts = np.asarray(matrix)
    totals = counts.sum(axis=1, keepdims=True)
    shares = counts / np.maximum(totals, 1)
    values = shares if normalize else counts
    text = [[f"{s:.0%}<br>{c}" if normalize else f"{c}" for s, c in zip(srow, crow)]
            for srow, crow in zip(shares, counts)]
    fig = go.Figure(go.Heatmap(z=values, x=list(classes), y=list(classes), text=text, texttemplate="%{text}",
                               colorscale="Blues", zmin=0, zmax=1 if normalize else None,
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>"))
    fig.update_xaxes(title_text="predicted", side="top")
    fig.update_yaxes(title_text="true", autorange="reversed")
    return _layout(fig, 120 + 48 * len(classes))


def per_class_bars(per_class: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """Precision, recall and F1 of each class as grouped bars (EvalReport.per_class())."""
    classes = list(per_class)
    fig = go.Figure([go.Bar(x=classes, y=[per_class[c][metric] for c in classes], name=metric)
                     for metric in ("precision", "recall", "f1")])
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return _layout(fig, 320, barmode="group")


def reliability_diagram(fit: Calibration) -> go.Figure:
    """Accuracy against confidence per bin (metrics.Calibration), the diagonal a calibrated model would follow,
    and how many faces each bin holds (bars, right axis). The line leaves out bins of under 1% of the faces
    (a bin of one face is right 0% or 100% of the time: noise, not calibration)."""
    middles = ((fit.edges[:-1] + fit.edges[1:]) / 2).tolist()  # lists: plain numbers in the figure's JSON
    used = fit.counts >= max(1.0, 0.01 * fit.counts.sum())
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=middles, y=fit.counts.tolist(), width=(np.diff(fit.edges) * 0.9).tolist(), name="faces",
                         marker_color="#d0d7e2", hovertemplate="%{y:,} faces<extra></extra>"), secondary_y=True)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="calibrated",
                             line=dict(color="#8b8d98", dash="dash"), hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=fit.confidence[used].tolist(), y=fit.accuracy[used].tolist(), mode="lines+markers",
                             name="this model",
                             line=dict(color=VAL_COLOR),
                             hovertemplate="confidence %{x:.1%}<br>right %{y:.1%}<extra></extra>"))
    fig.update_xaxes(title_text="confidence (probability of the class predicted)", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(title_text="share right", range=[0, 1], tickformat=".0%", secondary_y=False)
    fig.update_yaxes(title_text="faces", rangemode="tozero", showgrid=False, secondary_y=True)
    return _layout(fig, 360)


def probability_bars(probabilities: Mapping[str, float], title: str | None = None) -> go.Figure:
    """One face's class probabilities as horizontal bars in the emotions' colours, the top class on top."""
    ranked = sorted(probabilities.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[p for _, p in ranked], y=[c for c, _ in ranked], orientation="h",
                           marker_color=[COLORS.get(c, "#888888") for c, _ in ranked],
                           text=[f"{p:.0%}" for _, p in ranked], textposition="outside", textangle=0,
                           cliponaxis=False))  # beside its bar, level: text too long for a bar inside is turned 90°
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    _layout(fig, 60 + 26 * len(ranked), title=title)
    fig.update_layout(margin_r=40)  # room for the text of a bar that fills the axis ("100%")
    return fig


def emotion_timeline(seconds: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> go.Figure:
    """A video's emotions over time: one line per class (the largest face's probability per frame; gaps where no
    face was found), in the emotions' colours."""
    fig = go.Figure([go.Scatter(x=seconds, y=probabilities[:, i], name=c, mode=_lines(len(seconds)),
                                line=dict(color=COLORS.get(c, "#888888"), width=2)) for i, c in enumerate(classes)])
    fig.update_xaxes(title="seconds")
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return _layout(fig, 320)


def class_counts(counts: Mapping[str, int], title: str | None = None) -> go.Figure:
    """Images per class as bars in the emotions' colours."""
    fig = go.Figure(go.Bar(x=list(counts), y=list(counts.values()), text=[f"{n:,}" for n in counts.values()],
                           textposition="outside", marker_color=[COLORS.get(c, "#888888") for c in counts]))
    fig.update_yaxes(title_text="images")
    return _layout(fig, 300, title=title)
