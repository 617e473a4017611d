"""What the pages share: the data source and checkpoint pickers, the runs table, and the cached heavy objects.

Nothing here imports torch at import time: the home page uses it too.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import streamlit as st

from fercore.app import data_views, model_menu, settings
from fercore.data import FaceData, is_synthetic, load_data
from fercore.data.dataset import DEFAULT_SYNTHETIC_SIZE
from fercore.data.sources import stat_fingerprint
from fercore.errors import SHOWN_AS_ONE_LINE, UserError
from fercore.paths import user_path
from fercore.runs import RunDir

if TYPE_CHECKING:
    import numpy as np
    from streamlit.runtime.uploaded_file_manager import UploadedFile

    from fercore.checkpoint import LoadedModel
    from fercore.explain import OcclusionMap
    from fercore.predict import Predictor

T = TypeVar("T")

# Widgets that keep their values while the page shows another tab (only the open tab runs, and Streamlit drops the
# state of a widget it does not draw): the data picker, and Train's New run form
KEPT: dict[str, Any] = {"persist_state": "page"}
SOURCE_KINDS = {
    "synthetic": "Built-in synthetic demo faces",
    "path": "A folder, .zip or .csv on this machine",
    "upload": "Upload archive.zip or fer2013.csv",
}


def enter_app() -> None:
    """Call first in every page: make a first visit by page address (/train) still go through the app.

    Streamlit 1.67 treats a folder named pages/ as a legacy page list until st.navigation has run once in the
    process, so such a first visit would run the page alone, with the wrong sidebar and without the app's
    settings. Switching that legacy mode off and rerunning lets streamlit_app.py route to the same page.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and not st.session_state.get("entered-app"):
        st.session_state["entered-app"] = True  # once per session: a rerun must never swallow a click
        PagesManager.uses_pages_directory = False
        st.rerun()


STAMP_SECONDS = 10  # how long the sizes and times of a data folder's files are trusted (FER2013's: 0.2 s to read)


@st.cache_data(ttl=STAMP_SECONDS, max_entries=16, show_spinner=False)
def _files_stamp(path: str) -> str:
    """A digest of the sizes and times of every image of a data folder, read again at most every STAMP_SECONDS."""
    return hashlib.blake2b(stat_fingerprint(Path(path)).encode(), digest_size=16).hexdigest()


def data_stamp(source: str) -> str:
    """What changes when the data of a source changes (a cache key part): at once when a file is added, removed or
    renamed (its folders' times), within STAMP_SECONDS when one is rewritten in place; not a walk of every file
    on every widget's rerun."""
    if is_synthetic(source):
        return source
    path = user_path(source)
    return stat_fingerprint(path, folders_only=True) + _files_stamp(str(path))


@st.cache_resource(max_entries=2, show_spinner="Reading the data set (the first time decodes every image)...")
def _load_data(source: str, stamp: str) -> FaceData:
    return load_data(source)


def load_faces(source: str) -> FaceData:
    """The decoded data source, kept in memory while it is unchanged on disk."""
    return _load_data(source, data_stamp(source))


def data_source_picker(key: str, default: str = "synthetic") -> str | None:
    """Synthetic faces, a path on disk or an upload, as a load_data source; None until the user has given one.
    A new default (Evaluate's model trained on other data) starts the choice over from it.

    Raises UserError for a refused upload, OSError when it cannot be stored.
    """
    if st.session_state.get(f"{key}-default", default) != default:
        for widget in ("kind", "synthetic", "path"):
            st.session_state.pop(f"{key}-{widget}", None)
    st.session_state[f"{key}-default"] = default
    kinds = list(SOURCE_KINDS)
    kind = st.radio("Data", kinds, index=0 if is_synthetic(default) else 1, format_func=SOURCE_KINDS.get,
                    horizontal=True, key=f"{key}-kind", **KEPT)
    if kind == "synthetic":
        _, _, size = default.partition(":") if is_synthetic(default) else ("", "", "")
        count = st.number_input("Number of synthetic faces (7 expressions, balanced)", 70, 200_000,
                                int(size or DEFAULT_SYNTHETIC_SIZE), step=700, key=f"{key}-synthetic", **KEPT)
        return f"synthetic:{count}"
    if kind == "path":
        path = st.text_input("Path", "" if is_synthetic(default) else default, key=f"{key}-path", **KEPT,
                             placeholder="/data/fer2013/train  (emotion folders), archive.zip or fer2013.csv",
                             help=f"Allowed under: {', '.join(map(str, settings.data_roots()))} "
                                  f"(more with {settings.DATA_ROOTS_ENV})")
        return str(settings.allowed_data_path(path.strip())) if path.strip() else None
    upload = st.file_uploader("archive.zip (Kaggle) or fer2013.csv", type=["zip", "csv"], key=uploader_key(key),
                              max_upload_size=data_views.MAX_DATA_UPLOAD_MB)
    manager = st.container()  # filled last, so that it lists an upload stored by this very run of the page
    try:
        return _upload_source(key, upload)
    finally:
        with manager:
            stored_uploads_manager(key)


def _upload_source(key: str, upload: UploadedFile | None) -> str | None:
    """The stored copy of the uploaded data set (stored now if new), the one uploaded earlier, or None."""
    stored: dict[str, str] = st.session_state.setdefault(f"{key}-stored", {})  # upload id -> stored path
    if upload is None:  # the uploader forgets its file when not drawn (another tab): the stored copy stays in use
        last = st.session_state.get(f"{key}-last-upload")
        if not last or not Path(last[1]).is_file():
            return None
        note, forget = st.columns([4, 1], vertical_alignment="center")
        if forget.button("Forget it", key=f"{key}-forget"):
            del st.session_state[f"{key}-last-upload"]
            st.rerun()  # drawn anew without it
        note.caption(f"Using {last[0]}, uploaded earlier (stored as {last[1]}); upload another to replace it")
        return last[1]
    if upload.file_id not in stored:
        path = data_views.store_upload(upload.name, upload.getvalue())
        try:
            load_faces(str(path))  # read now (and kept): a file that is not a data set is not kept either
        except SHOWN_AS_ONE_LINE as exc:
            path.unlink(missing_ok=True)
            raise UserError(str(exc).replace(path.name, upload.name)) from None
        stored[upload.file_id] = str(path)
    st.caption(f"Stored as {stored[upload.file_id]}")
    st.session_state[f"{key}-last-upload"] = (upload.name, stored[upload.file_id])
    return stored[upload.file_id]


def uploader_key(key: str) -> str:
    """The upload widget's key: a new one each time its file's stored copy is deleted, as only a new widget lets
    go of the file (the browser keeps it)."""
    cleared = st.session_state.get(f"{key}-uploads-cleared", 0)
    return f"{key}-upload" + (f"-{cleared}" if cleared else "")


def stored_uploads_manager(key: str) -> None:
    """The data sets uploaded so far (kept, as runs read them), with a way to delete one."""
    uploads = data_views.stored_uploads()
    if not uploads:
        return
    sizes = {path: path.stat().st_size / 1024**2 for path in uploads}
    with st.expander(f"Stored uploads: {len(uploads)}, {sum(sizes.values()):.0f} MB on disk"):
        doomed = st.selectbox("Upload to delete", uploads, index=None, key=f"{key}-doomed-upload",
                              format_func=lambda p: f"{p.name} ({sizes[p]:.1f} MB, "
                                                    f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(mtime(p)))})",
                              help="Runs trained on it can then neither resume nor be evaluated on it.")
        if st.button("Delete for good", key=f"{key}-delete-upload", disabled=doomed is None):
            try:
                data_views.delete_upload(doomed)
            except UserError as exc:
                st.error(str(exc))
                return
            last = st.session_state.get(f"{key}-last-upload")
            if last and last[1] == str(doomed):
                del st.session_state[f"{key}-last-upload"]
            if str(doomed) in st.session_state.get(f"{key}-stored", {}).values():  # maybe still in the uploader
                st.session_state[f"{key}-uploads-cleared"] = st.session_state.get(f"{key}-uploads-cleared", 0) + 1
            st.toast(f"Deleted {doomed.name}")
            st.rerun()


@contextmanager
def progress_bar(describe: Callable[[int, int], str], start: str = "") -> Iterator[Callable[[int, int], None]]:
    """A progress bar while the block runs (showing start until the first report, if given), fed by the callback
    it yields (done, total; total 0: unknown), redrawn a few times a second at most and at the end; gone after."""
    bar, shown = st.empty(), [0.0]
    if start:
        bar.progress(0.0, text=start)

    def progress(done: int, total: int) -> None:
        if time.monotonic() - shown[0] >= 0.3 or done == total:  # a few updates a second, not one per step
            shown[0] = time.monotonic()
            bar.progress(min(done / total, 1.0) if total else 0.0, text=describe(done, total))
    try:
        yield progress
    finally:
        bar.empty()


def mtime(path: Path) -> float:
    return path.stat().st_mtime


@st.cache_data(max_entries=512, show_spinner=False)  # cards are small; every run's best and last are listed
def _card(path: str, modified: float) -> dict[str, Any]:
    return model_menu.read_card(Path(path))


def checkpoint_card(path: Path) -> dict[str, Any]:
    """The checkpoint's model card (cached while the file is unchanged); raises UserError for a bad file."""
    return _card(str(path), mtime(path))


@st.cache_resource(max_entries=2, show_spinner="Loading the model...")
def _predictor(path: str, modified: float) -> Predictor:
    from fercore.predict import Predictor

    return Predictor.from_checkpoint(path)


def load_predictor(path: Path) -> Predictor:
    """The model and face detector of a checkpoint, loaded once per process while the file is unchanged."""
    return _predictor(str(path), mtime(path))


@st.cache_resource(max_entries=2, show_spinner="Loading the model...")
def _model(path: str, modified: float, precision: str) -> LoadedModel:
    from fercore.checkpoint import load_model

    return load_model(path, "auto", precision)


def load_model_at(path: Path, precision: str) -> LoadedModel:
    """A checkpoint's model at a precision (auto, int8 or float) without a face detector, loaded once per process
    while the file is unchanged."""
    return _model(str(path), mtime(path), precision)


MAPS_KEPT = 64  # photos' (or faces') sets of occlusion maps kept: more than a page of photos shows at once


@st.cache_data(max_entries=MAPS_KEPT, ttl=1800, show_spinner="Hiding each part of the faces in turn...")
def explained_faces(_loaded: LoadedModel, checkpoint: str, checkpoint_mtime: float, dtype: str,
                    faces: tuple[np.ndarray, ...], labels: tuple[tuple[str, ...], ...],
                    tta: bool | None = None) -> list[list[tuple[OcclusionMap, np.ndarray]]]:
    """Occlusion maps (with drawings) of 48x48 faces for the classes named for each, one call per photo; cached per
    model file, precision and faces (the model itself is not hashed: the checkpoint and dtype name it)."""
    from fercore.explain import explain_faces

    return explain_faces(_loaded, faces, labels, tta)


def checkpoint_picker(key: str) -> Path | None:
    """Pick the shipped model or a run's checkpoint; the choice carries over between pages. None when there is none."""
    if not model_menu.SHIPPED_CHECKPOINT.is_file():
        st.info(f"The shipped model ({model_menu.SHIPPED_CHECKPOINT.name}) is missing (`git checkout -- "
                "checkpoints/fer2013.pt` restores it). Meanwhile pick any run's checkpoint.")
    choices = model_menu.checkpoint_choices()
    if not choices:
        st.warning("No checkpoint yet: train a model first (the synthetic demo takes about a minute).")
        st.page_link("pages/train.py", label="Train a model", icon=":material/model_training:")
        return None
    paths = [c.path for c in choices]
    remembered = st.session_state.get("checkpoint")
    chosen = st.selectbox("Model", choices, index=paths.index(remembered) if remembered in paths else 0,
                          format_func=lambda c: c.label, key=key)
    st.session_state["checkpoint"] = chosen.path
    return chosen.path


def picked_checkpoint(key: str, load: Callable[[Path], T]) -> tuple[Path, T]:
    """The checkpoint picked on this page and what load makes of it; stops the page (with the one-line message)
    when there is none yet or the file is bad."""
    path = checkpoint_picker(key)
    if path is None:
        st.stop()
    try:
        return path, load(path)
    except SHOWN_AS_ONE_LINE as exc:
        st.error(str(exc))
        st.stop()


def show_card(path: Path) -> None:
    """The checkpoint's card as a two-column table."""
    rows = model_menu.card_rows(checkpoint_card(path), path)
    st.markdown("\n".join([f"| Model | {path.name} |", "| --- | --- |",
                            *(f"| {k} | {v} |" for k, v in rows.items())]))


def runs_table(runs: list[RunDir]) -> None:
    """The run history: one row per run; a dash where a run has nothing to show (no epoch yet, no error)."""
    rows = [run.summary() for run in runs]
    for row in rows:
        row["training"] = model_menu.duration(row.pop("duration_s"))
        if row["best_val_acc"] is not None:  # in percent, for a format of one decimal
            row["best_val_acc"] *= 100
    st.dataframe(rows, hide_index=True, placeholder="–", column_order=(
        "name", "state", "arch", "epochs", "best_val_acc", "training", "error", "data", "path"), column_config={
        "name": st.column_config.TextColumn("name", width="medium"),  # an automatic name whole: 20261206-110614-fernet
        "best_val_acc": st.column_config.NumberColumn("best val acc", format="%.1f%%"),
        "training": st.column_config.TextColumn("training time"),
        "error": st.column_config.TextColumn("why it ended", width="large"),
    })
