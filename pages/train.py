"""Train: choose data and a recipe, start a training process, watch it live, and manage the runs on disk."""
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from fercore import hardware, leakage, models, paths, plots
from fercore.app import data_views, launcher, model_menu
from fercore.config import CLASS_WEIGHTS, OPTIMIZERS, SCHEDULES, TEACHING, TrainConfig, preset
from fercore.data import FaceData, FaceSet, is_synthetic
from fercore.data.splits import epoch_steps
from fercore.errors import SHOWN_AS_ONE_LINE
from fercore.labels import CLASS_SETS, EMOTIONS, resolve_classes
from fercore.runs import ACTIVE_STATES, LAST, RunDir, default_run_name, delete_run, describe_startup, list_runs
from fercore.train import measure_step_seconds
from pages._common import KEPT, checkpoint_card, data_source_picker, enter_app, load_faces, runs_table

enter_app()

# field of AugmentConfig -> (label, slider maximum, step)
AUGMENTATIONS = {
    "hflip": ("Mirror (probability)", 1.0, 0.05),
    "rotate": ("Rotate (± degrees)", 45.0, 1.0),
    "scale": ("Zoom (± fraction)", 0.5, 0.01),
    "translate": ("Shift (± fraction of the side)", 0.3, 0.01),
    "brightness": ("Brightness (±)", 0.6, 0.01),
    "contrast": ("Contrast (± fraction)", 0.8, 0.01),
    "erase": ("Erase a patch (probability)", 1.0, 0.05),
    "mixup": ("Mixup: blend two faces and their labels (Beta α; 0 = off)", 1.0, 0.05),
    "cutmix": ("CutMix: paste a patch of another face, labels by area (Beta α; 0 = off)", 2.0, 0.1),
}
PREVIEW_FACES = 10
# the Start from option of random weights: not None, which a kept selectbox takes for no choice (a blank box)
FROM_SCRATCH = ""
TEACHING_LABELS = {"fixed": "each plain face, once (fast)", "live": "every augmented batch (consistent, slower)"}
RESUMABLE_STATES = ("stopped", "interrupted", "failed")
# While a run trains, its progress line refreshes every STATUS_REFRESH_S and its curves every CURVES_REFRESH_S.
# The server and the browser spend CPU on every refresh, and the run loses about twice that: with the Live tab open
# they took 0.23-0.26 cores at 2 s (curves included, or apart at 6 s) and 0.17 at 3 s / 6 s (2 cores, 2 threads).
STATUS_REFRESH_S, CURVES_REFRESH_S = 3, 6


@st.cache_data(show_spinner=False)
def parameter_count(arch: str, classes: int, arch_args: dict[str, Any] | None = None) -> int:
    return models.parameter_count(models.build(arch, classes, **(arch_args or {})))


def eta(seconds: float | None) -> str:
    return "?" if seconds is None else model_menu.duration(seconds)


@st.cache_data(max_entries=64, ttl=600, show_spinner="Timing a training step on this machine...")
def step_seconds(arch: str, arch_args: dict[str, Any], batch_size: int, device: str, num_classes: int,
                 threads: int, teachers: tuple[tuple[str, dict[str, Any]], ...] = ()) -> float:
    """Seconds per training step of this architecture (with its arch_args) and batch here, with the forward passes
    of live teachers of these (architecture, arch_args) (measured again after ten minutes: the machine's load
    changes)."""
    cfg = TrainConfig(arch=arch, arch_args=arch_args, batch_size=batch_size, device=device)
    return measure_step_seconds(cfg, num_classes, threads, teachers=teachers)


def live_teacher_archs(cfg: TrainConfig) -> tuple[tuple[str, dict[str, Any]], ...]:
    """The (architecture, arch_args) of each teacher that will run at every step (live teaching), from its card."""
    if cfg.teaching != "live":
        return ()
    cards = [checkpoint_card(Path(teacher)) for teacher in cfg.teachers]
    return tuple((card["arch"], card.get("arch_args", {})) for card in cards)


def launch(start: Callable[[], RunDir]) -> None:
    """Launch a training process and follow its run: the page polls until the process reports."""
    try:
        run = start()
    except SHOWN_AS_ONE_LINE as exc:
        st.error(str(exc))
        return
    st.session_state["launched"] = (run.path, time.time())
    st.session_state["show-live"] = True
    st.rerun()


def awaiting_report(run: RunDir) -> bool:
    """Whether this session launched the run and its process has not written its status since (a minute at most)."""
    path, launched_at = st.session_state.get("launched", (None, 0.0))
    if path != run.path or time.time() - launched_at > launcher.LAUNCH_GRACE_S:
        return False
    return run.status_raw().get("updated", 0) < launched_at and launcher.launch_problem(run) is None


def run_progress(run: RunDir, status: dict[str, Any], waiting: bool) -> None:
    """Progress bar, error, and the Stop or Resume button of a run that has a status (read from its status alone
    while it trains: its metrics.jsonl grows by a line a second, and the curves read it at their own pace)."""
    state = status["state"]
    total = status.get("total_epochs") or 1
    epoch = min(status.get("epoch") or 0, total)  # after the last epoch the status names the one after it
    step, steps = status.get("step") or 0, status.get("steps") or 0
    active = state in ACTIVE_STATES
    epochs_done = 0 if active else len(run.epochs())
    stopped_within = state == "stopped" and steps and 0 < step < steps  # saved in the middle of an epoch
    done = ((epoch - 1 + step / steps) / total if (active or stopped_within) and steps else epochs_done / total)
    best = status.get("best_val_acc")
    if state == "starting" and status.get("startup"):
        parts = [f"**{state}**", describe_startup(status["startup"]), f"ETA {eta(status['startup'].get('eta_s'))}"]
    elif state == "starting":
        parts = [f"**{state}**", "reading the data and building the model"]
    elif active:
        parts = [f"**{state}**", f"epoch {epoch}/{total}", f"step {step}/{steps}",
                 f"{status.get('images_per_s') or 0:,.0f} images/s", f"ETA {eta(status.get('eta_s'))}"]
    elif stopped_within:
        parts = [f"**{state}**", f"{epochs_done}/{total} epochs done", f"saved at step {step}/{steps} of epoch {epoch}"]
    else:
        parts = [f"**{state}**", f"{epochs_done}/{total} epochs done"]
    if best is not None and best >= 0:
        parts.append(f"best val acc {best:.1%}")
    st.progress(min(1.0, max(0.0, done)), text=" · ".join(parts))
    if status.get("error") and not active:
        st.error(status["error"])
        with st.expander("Training log"):
            st.code(launcher.log_tail(run) or "(empty)")
    if waiting:
        st.caption("Resuming: waiting for the training process...")
    elif active and run.stop_requested():
        st.caption("Stop requested: the run saves its position and stops after the current step.")
    elif active and st.button("Stop", icon=":material/stop:", key="stop"):
        run.request_stop()
        st.rerun(scope="fragment")
    elif state in RESUMABLE_STATES and run.file(LAST).exists():
        if st.button("Resume", icon=":material/play_arrow:", key="resume"):
            launch(lambda: launcher.continue_training(run))


def live_panel(run: RunDir, polling: bool) -> None:
    """What the run is doing; reruns every STATUS_REFRESH_S while it is going, and the whole page once it ends."""
    status = run.status()
    waiting = awaiting_report(run)
    if status:  # a resumed run's, until its new process writes one
        run_progress(run, status, waiting)
    if problem := launcher.launch_problem(run):
        st.error(f"The training process ended before it started: {problem}")
    elif not status:
        st.info("Starting the training process...")
    if polling and not (waiting or status.get("state") in ACTIVE_STATES):
        st.rerun()  # it just ended: refresh the whole page (history, checkpoints) and stop polling


def live_section() -> None:
    runs = list_runs(paths.runs_dir())
    launched, launched_at = st.session_state.get("launched", (None, 0.0))
    if launched and launched not in [r.path for r in runs] and time.time() - launched_at < launcher.LAUNCH_GRACE_S:
        runs.insert(0, RunDir(launched))  # launched a moment ago: it has no config.json yet
    if not runs:
        st.info("No runs yet: start one under New run.")
        return
    default = next((r for r in runs if r.path == launched), None) or next(
        (r for r in runs if r.is_active()), runs[0])
    run = st.selectbox("Run", runs, index=runs.index(default), format_func=lambda r: r.name)
    polling = run.is_active() or awaiting_report(run)
    st.fragment(live_panel, run_every=STATUS_REFRESH_S if polling else None)(run, polling)
    st.fragment(live_curves, run_every=CURVES_REFRESH_S if polling else None)(run)


def live_curves(run: RunDir) -> None:
    """Loss, accuracy and learning rate so far; a continued run's curves carry on from the run it started from."""
    curves = run.curves()
    if curves.history or curves.progress:
        st.plotly_chart(plots.training_curves(curves.history, curves.progress), key=f"curves-{run.name}")


@st.cache_data(max_entries=8, show_spinner=False)
def repeats_note(fingerprint: str, _data: FaceData) -> str:
    """The data's copied and blank faces (fercore.leakage.repeats_note), once per data set (0.17 s for FER2013)."""
    return leakage.repeats_note(_data.raw.images, _data.raw.emotions)


def data_preview(faces: FaceSet, note: str, origin: str, repeats: str) -> None:
    """Class counts and sample faces of the training faces (origin: which of the data's faces they are, and what
    was held out of them; repeats: the whole data set's copied faces)."""
    counts = faces.counts()
    left, right = st.columns([3, 2])
    left.plotly_chart(plots.class_counts(counts, title=f"{len(faces):,} training faces"))
    left.caption(origin)
    grid, shown = data_views.class_grid(faces, per_class=6)
    right.image(grid, caption="six per class, rows: " + ", ".join(shown))
    warning = data_views.imbalance_warning(counts)
    if warning:
        st.warning(warning)
    if note:
        st.caption(note)
    if repeats:
        st.caption(f"Whole data set: {repeats}.")


def augmentation_choices(base: TrainConfig, faces: FaceSet, key: str) -> dict[str, float]:
    """A slider per augmentation beside a preview of what it does to the same faces."""
    samples = data_views.class_samples(faces, per_class=2, seed=1)[0][:PREVIEW_FACES]
    st.image(data_views.face_grid(samples, PREVIEW_FACES), caption="the faces as they are")
    values = {}
    for field, (label, top, step) in AUGMENTATIONS.items():
        left, right = st.columns([1, 2], vertical_alignment="center")
        values[field] = left.slider(label, 0.0, top, float(getattr(base.augment, field)), step, key=f"{key}{field}",
                                    **KEPT)
        right.image(data_views.face_grid(data_views.augmented(
            samples, data_views.single_augmentation(field, values[field])), PREVIEW_FACES))
    all_on = dataclasses.replace(base.augment, **values)
    st.image(data_views.face_grid(data_views.augmented(samples, all_on), PREVIEW_FACES),
             caption="all together (one random draw)")
    return values


def warm_start_picker(classes: tuple[str, ...]) -> tuple[Path, dict[str, Any]] | None:
    """Random weights, or a checkpoint over the same classes to continue from (its card with it)."""
    choices = model_menu.warm_start_choices(classes, checkpoint_card)
    # options are paths, labels looked up: a label that changes (a run's accuracy so far) keeps the choice
    cards = {str(choice.path): card for choice, card in choices}
    labels = {FROM_SCRATCH: "random weights (from scratch)", **{
        str(choice.path): f"{choice.label}: {card['arch']} (continue training it)" for choice, card in choices}}
    picked = st.selectbox("Start from", list(labels), key="warm-start", **KEPT, format_func=lambda p: labels.get(p, p),
                          help="Continue a trained model with a fresh learning-rate cycle (a warm restart); on "
                               "FER2013 data the recipe defaults become the fer2013-restart preset's. A model "
                               "that learned this run's validation faces is refused when the run starts.")
    return (Path(picked), cards[picked]) if picked in cards else None


def teachers_picker(base: TrainConfig, fingerprint: str, key: str,
                    weight: float) -> tuple[list[str], float, str]:
    """Trained models whose averaged predictions join the labels as soft targets, their weight in the loss
    (weight: the slider's default) and what they see (TEACHING)."""
    choices = model_menu.teacher_choices(tuple(base.classes), fingerprint, base.val_split(), checkpoint_card)
    if not choices:
        st.caption("No trained model of these classes on this data, with the same validation split, to learn from.")
        return [], base.distill, base.teaching
    labels = {str(choice.path): choice.label for choice in choices}  # paths as options, as in warm_start_picker
    picked = st.multiselect("Teachers", list(labels), key="teachers", **KEPT,
                            format_func=lambda p: labels.get(p, p),
                            help="Models trained here on the same faces: the new model learns from the average of "
                                 "their predictions as well as from the labels (knowledge distillation).")
    weight = st.slider("Weight of the teachers' predictions in the loss", 0.05, 1.0, weight, 0.05,
                       **KEPT, key=key + "distill", disabled=not picked)
    teaching = st.radio("The teachers see", TEACHING, TEACHING.index(base.teaching), **KEPT, key=key + "teaching",
                        horizontal=True, disabled=not picked, format_func=TEACHING_LABELS.get,
                        help="Live: the teachers label each augmented batch as the student sees it (an erased "
                             "mouth, a mixed face), which costs their forward pass at every step.")
    teachers = [p for p in picked if p in labels]
    return (teachers, weight, teaching) if teachers else ([], base.distill, base.teaching)  # kept but unused


def class_picker() -> tuple[str, ...] | None:
    """The emotions to train on, in the canonical order whatever order they were picked in; None (with the one-line
    reason shown) for a set that cannot be trained."""
    set_name = st.selectbox("Classes", [*CLASS_SETS, "custom"], **KEPT, key="class-set",
                            format_func=lambda s: f"{s}: {', '.join(CLASS_SETS[s])}" if s in CLASS_SETS else s)
    try:
        return resolve_classes(CLASS_SETS.get(set_name) or st.multiselect("Emotions", EMOTIONS, default=EMOTIONS,
                                                                          **KEPT, key="emotions"))
    except ValueError as exc:
        st.error(str(exc))
        return None


def starting_recipe(source: str, classes: tuple[str, ...],
                    start: tuple[Path, dict[str, Any]] | None) -> tuple[str, TrainConfig]:
    """The preset the form starts from (demo for synthetic data, fer2013 or fer2013-restart) and its recipe."""
    preset_name = "demo" if is_synthetic(source) else "fer2013-restart" if start else "fer2013"
    base = preset(preset_name, data=source, classes=list(classes))
    if start:
        base = dataclasses.replace(base, arch=start[1]["arch"], arch_args=start[1].get("arch_args", {}),
                                   init_from=str(start[0]))
    return preset_name, base


def recipe_form(base: TrainConfig, preset_name: str, warm_start: bool, faces: FaceSet,
                fingerprint: str) -> tuple[TrainConfig, str]:
    """The recipe widgets, defaulting to base; returns the recipe and the run name typed (may be empty)."""
    st.subheader(f"Recipe (defaults: the {preset_name} preset)")
    key = f"{preset_name}-"  # other defaults for other data: the widgets of each preset are their own
    classes = len(faces.classes)
    first, second, third = st.columns(3)
    archs = [base.arch] if warm_start else models.names()  # a warm start keeps its checkpoint's architecture
    start_args = base.arch_args if warm_start else None  # and its exact widths

    def size(arch: str, arch_args: dict[str, Any] | None) -> str:
        return f"{parameter_count(arch, classes, arch_args) / 1e6:.2f} M parameters"

    arch = first.selectbox("Architecture", archs, index=archs.index(base.arch), disabled=warm_start,
                           **KEPT, key=key + ("arch-of-start" if warm_start else "arch"),
                           format_func=lambda a: f"{a} ({size(a, start_args)})",
                           help="\n\n".join(f"**{a.name}**: {a.description}" for a in models.ARCHITECTURES.values()))
    base_width = models.width_factor(base.arch, base.arch_args)
    widths = [base_width] if warm_start else sorted({*models.WIDTHS, base_width})
    width = second.selectbox("Width", widths, index=widths.index(base_width), disabled=warm_start,
                             **KEPT, key=key + ("width-of-start" if warm_start else f"width-{arch}"),  # label per arch
                             format_func=lambda w: f"{w:g}x ({size(arch, start_args or models.width_args(arch, w))})",
                             help="every stage's channels times this: wider learns more and costs about its "
                                  "square in time (the fer2013-wide preset, the shipped model's, is 1.5x fernet)")
    epochs = third.number_input("Epochs", 1, 500, base.epochs, **KEPT, key=key + "epochs")
    batch_size = first.number_input("Batch size", 2, 2048, base.batch_size, step=16, **KEPT, key=key + "batch")
    optimizer = second.selectbox("Optimizer", OPTIMIZERS, OPTIMIZERS.index(base.optimizer), **KEPT, key=key + "opt")
    lr = third.number_input("Learning rate", 1e-6, 1.0, base.lr, format="%.2e", step=1e-3, **KEPT, key=key + "lr",
                            help="the peak of the onecycle schedule; the start of the others")
    schedule = first.selectbox("Schedule", SCHEDULES, SCHEDULES.index(base.schedule), **KEPT, key=key + "schedule")
    weight_decay = second.number_input("Weight decay", 0.0, 0.1, base.weight_decay, format="%.5f", step=1e-4,
                                       **KEPT, key=key + "wd")
    label_smoothing = third.slider("Label smoothing", 0.0, 0.5, base.label_smoothing, 0.05, **KEPT, key=key + "ls")
    class_weights = first.selectbox("Class weights", CLASS_WEIGHTS, CLASS_WEIGHTS.index(base.class_weights),
                                    **KEPT, key=key + "cw", help="sqrt or balanced weigh rare classes up in the loss")
    device = second.selectbox("Device", hardware.available_devices(), **KEPT, key=key + "device")
    seed = third.number_input("Seed", 0, 2**31 - 1, base.seed, **KEPT, key=key + "seed")
    swa_epochs = first.number_input("Average the last epochs", 0, int(epochs), min(base.swa_epochs, int(epochs)),
                                    **KEPT, key=key + "swa",
                                    help="stochastic weight averaging over the last this many epochs (0 = off), "
                                         "usually epochs at a constant learning rate: in them, the model validated "
                                         "(and kept as best.pt when it validates best) is the mean of the weights "
                                         "at the end of each so far")
    name = st.text_input("Run name", **KEPT, key="run-name", placeholder=f"{default_run_name(arch)} (automatic)")
    with st.expander("Augmentation: what each one does to the training faces"):
        augment = augmentation_choices(base, faces, key)
    with st.expander("Distillation: learn from trained models as well as from the labels"):
        # on FER2013 data, teachers make the recipe the fer2013-distill preset's: its weight is the default
        weight = base.distill if is_synthetic(base.data) else preset("fer2013-distill").distill
        teachers, distill, teaching = teachers_picker(base, fingerprint, key, weight)
    arch_args = base.arch_args if warm_start else models.width_args(arch, width)
    cfg = dataclasses.replace(base, arch=arch, arch_args=arch_args, epochs=int(epochs), batch_size=int(batch_size),
                              optimizer=optimizer, lr=float(lr), schedule=schedule, weight_decay=float(weight_decay),
                              label_smoothing=float(label_smoothing), class_weights=class_weights, device=device,
                              seed=int(seed), augment=dataclasses.replace(base.augment, **augment),
                              teachers=teachers, distill=float(distill), teaching=teaching,
                              swa_epochs=int(swa_epochs))
    return cfg, name.strip()


def start_button(cfg: TrainConfig, name: str, train_faces: int) -> None:
    """The time an epoch will take here, a warning when another run is training, and the Start button."""
    busy = [r.name for r in list_runs(paths.runs_dir()) if r.is_active()]
    if busy:  # a step timed now would take CPU from the run and say little of the time alone
        st.warning(f"Already training: {', '.join(busy)}. A second run shares the CPU with it and both slow down.")
    else:
        threads = launcher.training_threads()
        steps, batch = epoch_steps(train_faces, cfg.batch_size)
        teachers = live_teacher_archs(cfg)
        try:
            step_s = step_seconds(cfg.arch, cfg.arch_args, batch, cfg.device, len(cfg.classes), threads, teachers)
        except (RuntimeError, MemoryError) as exc:  # out of memory at this batch, say
            st.caption(f"Could not time a training step here ({str(exc).splitlines()[0][:120]}).")
        else:
            st.caption(f"About **{eta(step_s * steps)} per epoch** on this machine: "
                       f"{data_views.epoch_note(train_faces, cfg.batch_size)}, at {step_s * 1000:.0f} ms a step "
                       f"(measured with {threads} thread(s), as the run will use"
                       f"{'; the live teachers included' if teachers else ''}).")
    if st.button("Start training", type="primary", icon=":material/play_arrow:"):
        launch(lambda: launcher.start_training(cfg, name or default_run_name(cfg.arch)))


def new_run_section() -> None:
    """Data, classes, an optional warm start, the recipe, and Start."""
    try:
        source = data_source_picker("train")
    except SHOWN_AS_ONE_LINE as exc:
        st.error(str(exc))
        return
    if source is None:
        st.info("Give a data source to see its faces and start a run.")
        return
    classes = class_picker()
    if classes is None:
        return
    start = warm_start_picker(classes)
    preset_name, base = starting_recipe(source, classes, start)
    try:
        data = load_faces(source)
        faces = data.split("train", classes, base.val_fraction, base.split_seed)
    except SHOWN_AS_ONE_LINE as exc:
        st.error(str(exc))
        return
    origin = data_views.training_faces_note(data.splits_present(), base.val_fraction, is_synthetic(source))
    data_preview(faces, data.raw.report.summary(), origin, repeats_note(data.fingerprint, data))
    cfg, name = recipe_form(base, preset_name, start is not None, faces, data.fingerprint)
    start_button(cfg, name, len(faces))


def history_section() -> None:
    runs = list_runs(paths.runs_dir())
    if not runs:
        st.info("No runs yet.")
        return
    runs_table(runs)
    histories = {name: epochs for name, epochs in ((r.name, r.history()) for r in runs) if epochs}
    if histories:
        left, right = st.columns([3, 1])
        chosen = left.multiselect("Compare runs", list(histories), default=list(histories)[:3], key="compare")
        metric = right.selectbox("Metric", list(plots.METRIC_TITLES), format_func=plots.METRIC_TITLES.get,
                                 key="compare-metric")
        st.plotly_chart(plots.runs_overlay({name: histories[name] for name in chosen}, metric))
    if deleted := st.session_state.pop("deleted-run", None):
        st.toast(f"Deleted {deleted}", icon=":material/delete:")
    with st.popover("Delete a run", icon=":material/delete:"):
        doomed = st.selectbox("Run to delete", [r.name for r in runs], index=None, key="doomed",
                              placeholder="choose a run")
        if st.button("Delete for good", type="primary", key="delete", disabled=doomed is None):
            try:
                delete_run(RunDir(paths.runs_dir() / doomed))
                if st.session_state.get("launched", (None,))[0] == paths.runs_dir() / doomed:
                    del st.session_state["launched"]
            except SHOWN_AS_ONE_LINE as exc:
                st.error(str(exc))
            else:
                st.session_state["deleted-run"] = doomed
                del st.session_state["doomed"]  # nothing chosen after a deletion: no second click deletes another
                st.rerun()


st.title("Train")
if st.session_state.pop("show-live", False):  # a run was just started: watch it
    st.session_state["train-tab"] = "Live"
elif "train-tab" not in st.session_state:
    running = any(run.is_active() for run in list_runs(paths.runs_dir()))
    st.session_state["train-tab"] = "Live" if running else "New run"
tabs = dict(zip(("New run", "Live", "Runs"), st.tabs(["New run", "Live", "Runs"], key="train-tab", on_change="rerun")))
for label, section in (("New run", new_run_section), ("Live", live_section), ("Runs", history_section)):
    if tabs[label].open:  # only the tab in view runs
        with tabs[label]:
            section()
