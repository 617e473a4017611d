"""Evaluate: a checkpoint on a data split: accuracy, macro F1, confusion, per-class report, the comparison with
another model, calibration, confident mistakes."""
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from fercore import plots
from fercore.app import data_views, model_menu, outputs, settings
from fercore.compare import compare_reports, p_text
from fercore.data import FaceData, is_synthetic
from fercore.data.splits import carves_validation
from fercore.errors import SHOWN_AS_ONE_LINE
from fercore.evaluate import EvalReport, evaluate
from fercore.latest import LatestKept
from fercore.runs import RunDir
from pages._common import (
    checkpoint_card,
    data_source_picker,
    enter_app,
    explained_faces,
    load_faces,
    load_model_at,
    mtime,
    picked_checkpoint,
    progress_bar,
    show_card,
)

enter_app()

MISTAKES = 24


REPORTS_KEPT = 8


@st.cache_resource
def _reports() -> LatestKept[EvalReport]:
    """The latest reports, shared by the sessions (a plain store, not st.cache_data: that cannot show progress in
    an element made outside the cached function)."""
    return LatestKept(REPORTS_KEPT)


def evaluation(checkpoint: Path, data: FaceData, split: str, tta: bool, precision: str,
               carve_of: Path | None = None) -> EvalReport:
    """The report, kept while the checkpoint and the faces are unchanged; a progress bar while it is computed.
    carve_of: the checkpoint whose validation carve val takes (the one compared with), else the model's own."""
    key = (str(checkpoint), mtime(checkpoint), data.source, data.fingerprint, split, tta, precision,
           carve_of and (str(carve_of), mtime(carve_of)))
    if (kept := _reports().get(key)) is not None:
        return kept
    with progress_bar(lambda done, total: f"Evaluating: {done:,} of {total:,} faces") as progress:
        report = evaluate(checkpoint, data, split, tta, precision, on_progress=progress,
                          carve_of=checkpoint_card(carve_of) if carve_of else None)
    _reports().put(key, report)
    return report


st.title("Evaluate")
checkpoint, card = picked_checkpoint("evaluate-model", checkpoint_card)
with st.expander("Model card"):
    show_card(checkpoint)

trained_on = str(card.get("data_source", "synthetic"))
try:
    source = data_source_picker("evaluate", default=settings.default_data_source(trained_on))
    if source is None:
        st.stop()
    data = load_faces(source)
    splits = data.splits_present()
except SHOWN_AS_ONE_LINE as exc:
    st.error(str(exc))
    st.stop()
if data.fingerprint == card.get("data_fingerprint"):
    validated = ("the part held out from that training" if carves_validation(splits)
                 else "the data's own, which validated that training")
    tested = ", its test split was not trained on" if "test" in splits else ""
    st.caption(f"This model was trained on these faces ({trained_on}): its val split is {validated}{tested} (a note "
               "below counts any faces it repeats).")
else:
    drawn = (" These drawn faces are unlike its photographs: expect a score far below its validation accuracy."
             if is_synthetic(source) and not is_synthetic(trained_on) else "")
    st.info(f"This model was trained on other data ({trained_on}): its validation split is not among these "
            f"faces (a note below counts any faces it trained on).{drawn}")
if note := data.raw.report.summary():
    st.warning(note)
options = ["test", "val", "train", "all"] if "test" in splits else ["val", "train", "all"]
own_faces = splits == ["all"] and data.fingerprint != card.get("data_fingerprint")  # a folder of one's own faces
left, right = st.columns(2)
split = left.selectbox("Split", options, options.index("all") if own_faces else 0,
                       help="val: the data's own when it has one (fer2013.csv's PublicTest rows), else carved from "
                            "train with the checkpoint's own fraction and seed; all: every face")
tta = right.toggle("Test-time augmentation", bool(card.get("tta", True)),
                   help="average the predictions for the face, the face zoomed by 10%, and both mirrored")
int8 = right.toggle("int8 on the CPU when the model is calibrated (3-4x faster)", True, key="evaluate-int8")
precision = "auto" if int8 else "float"
try:
    report = evaluation(checkpoint, data, split, tta, precision)
except SHOWN_AS_ONE_LINE as exc:
    st.error(str(exc))
    st.stop()

scored = report  # every face of the split, whichever the toggle below scores (the comparison takes these)
if note := report.seen_note():
    st.info(note)
    others = len(report.labels) - report.seen_in_training
    if others and st.toggle(f"Score only the other {others:,} faces", key="evaluate-unseen"):
        report = report.without_seen()
if note := report.absent_note():
    st.info(note.capitalize())
accuracy, macro_f1, count = st.columns(3)
accuracy.metric("Accuracy", f"{report.accuracy:.1%}")
macro_f1.metric("Macro F1", f"{report.macro_f1:.3f}")
count.metric("Faces", f"{len(report.labels):,}")
st.caption(f"Inference in {report.dtype}, test-time augmentation {'on' if report.tta else 'off'}.")

st.subheader("Confusion")
normalize = st.toggle("Row-normalised (each true class sums to 100%)")
st.plotly_chart(plots.confusion_heatmap(report.confusion(), report.classes, normalize))

st.subheader("Per class")
per_class = report.per_class()
table = pd.DataFrame(per_class).T.astype({"support": int}).rename_axis("class")
left, right = st.columns([2, 3])
left.dataframe(table, column_config={m: st.column_config.NumberColumn(format="%.3f")
                                     for m in ("precision", "recall", "f1")})
right.plotly_chart(plots.per_class_bars(per_class))

st.subheader("Against another model")
same_classes = [choice for choice, _ in model_menu.warm_start_choices(report.classes, checkpoint_card)
                if choice.path != checkpoint]
other = st.selectbox("Compare with", same_classes, index=None, format_func=lambda c: c.label, key="evaluate-compare",
                     placeholder="a model of the same emotions" if same_classes else "no other model of these "
                                                                                       "emotions yet",
                     help="Both models on the same faces: the faces this one gets right that the other misses "
                          "(gained) and the reverse (lost), and whether the difference is more than chance")
if other is not None:
    try:
        comparison = compare_reports(evaluation(other.path, data, split, tta, precision, carve_of=checkpoint), scored,
                                     (other.label, "this model"))
    except SHOWN_AS_ONE_LINE as exc:
        st.error(str(exc))
    else:
        difference, moved, p_value = st.columns(3)
        difference.metric("Accuracy difference", f"{100 * comparison.difference:+.2f} points")
        moved.metric("Faces gained / lost", f"{comparison.gained:,} / {comparison.lost:,}")
        p_value.metric("McNemar p", p_text(comparison.p_value))
        every = [f"on all {len(scored.labels):,} faces of the split, its training faces included"] * bool(
            report.left_out)
        verdict = ". ".join([comparison.verdict(), *comparison.notes(), *every])
        st.caption(f"{verdict[0].upper()}{verdict[1:]}.")
        recalls = {"first_recall": f"recall: {other.label}", "second_recall": "recall: this model"}
        st.dataframe(pd.DataFrame(comparison.per_class()).T.astype({"faces": int, "gained": int, "lost": int})
                     .rename_axis("class").rename(columns=recalls),
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in recalls.values()})
        if st.toggle("Show the faces that changed", key="evaluate-compare-faces"):
            for column, gained, total in zip(st.columns(2), (True, False), (comparison.gained, comparison.lost)):
                faces = comparison.changed_faces(gained)
                if not faces:
                    column.caption(f"No faces {'gained' if gained else 'lost'}.")
                    continue
                knew, missed = ("this model", "the other") if gained else ("the other", "this model")
                column.caption(f"{'Gained' if gained else 'Lost'}: {len(faces)} of the {total:,} faces {knew} gets "
                               f"right and {missed} misses, surest first: the true emotion, then what {missed} said")
                column.image(data_views.face_tiles(scored.faces.images, [f["index"] for f in faces]), width=96,
                             caption=[f"{f['true']}: {f['first'] if gained else f['second']}" for f in faces])

st.subheader("Confidence")
fit = report.calibration()
summary = fit.summary() + (f"; {note}" if (note := report.scaling_note()) else "")
st.caption(f"{summary[0].upper()}{summary[1:]}. Each point: the faces predicted with about that confidence (bins of "
           "under 1% of the faces left out), and the share of them it got right; a model whose confidence can be "
           "taken at its word follows the dashed line.")
st.plotly_chart(plots.reliability_diagram(fit))

st.subheader("Most confident mistakes")
ANY = "any"
true_pick, predicted_pick = st.columns(2)
true_class = true_pick.selectbox("True emotion", [ANY, *report.classes], key="evaluate-mistakes-true")
predicted_class = predicted_pick.selectbox("Predicted as", [ANY, *report.classes], key="evaluate-mistakes-predicted")
kind = {"true": None if true_class == ANY else true_class,
        "predicted": None if predicted_class == ANY else predicted_class}
mistakes = report.mistakes(MISTAKES, **kind)
if mistakes:
    count = report.count_mistakes(**kind)
    st.caption(f"true → predicted, with the model's confidence: the {len(mistakes)} most confident of {count:,} "
               "such mistakes" if count > len(mistakes) else "true → predicted, with the model's confidence")
    captions = [f"{m['true']} → {m['predicted']} {m['confidence']:.0%}" for m in mistakes]
    st.image(data_views.face_tiles(report.faces.images, [m["index"] for m in mistakes]), width=96, caption=captions)
    if st.toggle("Show where the model looked for one of them", key="evaluate-explain",
                 help="The face coloured by how much hiding each part (a 12-pixel square of grey, one position at a "
                      "time) changes the probability of the emotion it predicted and of the true one"):
        picked = st.selectbox("Mistake", range(len(mistakes)), format_func=lambda i: f"{i + 1}. {captions[i]}",
                              key=f"evaluate-explain-pick-{true_class}-{predicted_class}")  # a new kind: the first
        mistake = mistakes[picked]
        loaded = load_model_at(checkpoint, precision)
        (maps,) = explained_faces(loaded, str(checkpoint), mtime(checkpoint), loaded.dtype,
                                  (report.faces.images[mistake["index"]],), ((mistake["predicted"], mistake["true"]),),
                                  report.tta)
        for column, (occlusion, drawing), role in zip(st.columns(2), maps, ("predicted", "true")):
            column.image(drawing, width=192,
                         caption=f"{role}: {occlusion.target} {occlusion.probability:.0%}; {occlusion.describe()}")
elif kind == {"true": None, "predicted": None}:
    st.success("No mistakes on this split.")
else:
    st.success("No such mistakes on this split.")

epochs = RunDir(Path(checkpoint).parent).history()
if epochs:
    st.subheader("How it trained")
    st.plotly_chart(plots.training_curves(epochs))

stem = f"{Path(checkpoint).parent.name}-{Path(checkpoint).stem}-{split}" + ("-unseen" if report.left_out else "")
first, second, third = st.columns(3)
first.download_button("Per-class CSV", table.to_csv(), f"{stem}-per-class.csv", "text/csv", on_click="ignore")
second.download_button("Predictions CSV", lambda: outputs.predictions_csv(report), f"{stem}-predictions.csv",
                       "text/csv", on_click="ignore")
third.download_button("Report JSON", json.dumps(report.to_json(), indent=2), f"{stem}-report.json",
                      "application/json", on_click="ignore")
