"""What the Streamlit app needs from fercore beyond one call: its settings, training processes, checkpoints to
pick from, uploaded data sets and face grids.

No Streamlit here (this is testable on its own), and no torch at import time (the home page stays fast):
functions that need torch import it when called.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fercore.atomic import atomic_write_bytes, atomic_write_json
from fercore.errors import UserError
from fercore.paths import PROJECT_ROOT, SHIPPED_CHECKPOINT
from fercore.runs import BEST, LAST, RunDir, list_runs

if TYPE_CHECKING:
    from fercore.augment import AugmentConfig
    from fercore.config import TrainConfig
    from fercore.data import FaceSet
    from fercore.evaluate import EvalReport
    from fercore.predict import ImagePrediction, Predictor

RUNS_DIR_ENV = "FERCORE_RUNS_DIR"
DATA_DIR_ENV = "FERCORE_DATA_DIR"
ICE_SERVERS_ENV = "FERCORE_ICE_SERVERS"
DATA_ROOTS_ENV = "FERCORE_DATA_ROOTS"  # extra folders (os.pathsep-separated) whose data the app may read

DATA_UPLOAD_SUFFIXES = (".zip", ".csv")
MAX_DATA_UPLOAD_MB = 300  # fits the Kaggle archive.zip (about 60 MB) and fer2013.csv (about 290 MB)
MAX_IMAGE_UPLOAD_MB = 25
LAUNCH_CONFIG = "launch.json"  # the recipe the app asked for; the run's own config.json follows it
TRAIN_LOG = "train.log"  # the training process's stdout and stderr
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
IMBALANCE_RATIO = 3.0  # warn when the largest class has this many times the images of the smallest


# ---------------------------------------------------------------- settings (environment variables)
def runs_dir() -> Path:
    """Where training runs live: $FERCORE_RUNS_DIR or runs/ in the project."""
    return Path(os.environ.get(RUNS_DIR_ENV) or PROJECT_ROOT / "runs").expanduser()


def data_dir() -> Path:
    """Where uploaded data sets are stored: $FERCORE_DATA_DIR or data/ in the project."""
    return Path(os.environ.get(DATA_DIR_ENV) or PROJECT_ROOT / "data").expanduser()


def data_roots() -> list[Path]:
    """Folders the app may read data from: its data folder plus those listed in $FERCORE_DATA_ROOTS."""
    extra = [Path(p).expanduser() for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [data_dir(), *extra]


def allowed_data_path(typed: str) -> Path:
    """A typed data path, resolved; refused (UserError) when it lies outside every allowed data root."""
    path = Path(typed).expanduser().resolve()
    roots = [root.resolve() for root in data_roots()]
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise UserError(f"{typed} is outside the folders this app may read ({', '.join(map(str, roots))}): "
                        f"put the data there or add its folder to {DATA_ROOTS_ENV}")
    return path


def default_data_source(source: str) -> str:
    """source when the app may read it and it exists, else the synthetic demo set."""
    if source.split(":", 1)[0] == "synthetic":
        return source
    try:
        return str(allowed_data_path(source)) if Path(source).expanduser().exists() else "synthetic"
    except UserError:
        return "synthetic"


def ice_servers() -> list[dict[str, Any]]:
    """WebRTC ICE servers from $FERCORE_ICE_SERVERS (a JSON list); none by default, so nothing outside is asked."""
    raw = os.environ.get(ICE_SERVERS_ENV, "").strip()
    if not raw:
        return []
    example = '[{"urls": ["stun:stun.example.org:3478"]}]'
    try:
        servers = json.loads(raw)
    except ValueError:
        raise UserError(f"{ICE_SERVERS_ENV} is not valid JSON: give a list such as {example}") from None
    if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
        raise UserError(f"{ICE_SERVERS_ENV} must be a JSON list of servers with 'urls', such as {example}")
    return servers


# ---------------------------------------------------------------- training processes
def training_threads() -> int:
    """Threads for a new training process: every usable core that no active run holds.

    Measured on 2 cores (benchmarks, row 8): with the server and a browser on the Live tab (0.2 of a core), a run
    on both cores reached 0.80x a lone CLI run, one on a single core 0.55x; but two threads sharing a core with
    another busy process collapsed to 1/7 of one thread's speed. So: all free cores, never an occupied one.
    A run started with --threads 0 holds every core.
    """
    from fercore.hardware import usable_cores

    cores = usable_cores()
    taken = sum(int(run.config().get("threads", 1)) or cores for run in list_runs(runs_dir()) if run.is_active())
    return max(1, cores - taken)


def new_run_dir(name: str) -> Path:
    """The directory for a new run called name under the runs folder; refuses unsafe or taken names."""
    if not RUN_NAME.fullmatch(name):
        raise UserError("a run name uses letters, digits, '.', '_' and '-' only (at most 80, no leading dot)")
    path = runs_dir() / name
    if path.exists():
        raise UserError(f"a run named {name} already exists: choose another name")
    return path


_children: list[subprocess.Popen] = []  # launched processes, kept so that finished ones are reaped


def _launch(args: list[str], run: RunDir) -> None:
    """Start `python -m fercore ARGS` in its own session at low priority, its output going to the run's log."""
    _children[:] = [child for child in _children if child.poll() is None]
    command = [sys.executable, "-m", "fercore", *args]
    if shutil.which("nice"):
        command = ["nice", "-n", "10", *command]  # nice execs python: the pid stays the training process's
    # Passive OpenMP waiting: threads that would spin while a core is busy elsewhere sleep instead
    # (measured with one core busy: 236 img/s instead of 49 on two threads).
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with open(run.file(TRAIN_LOG), "ab") as log:
        _children.append(subprocess.Popen(command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True, env=env))


def start_training(cfg: TrainConfig, name: str) -> RunDir:
    """Launch a training process for cfg into a new run called name; invalid recipes and names fail here."""
    cfg.validate()
    run = RunDir(new_run_dir(name))
    run.path.mkdir(parents=True)
    atomic_write_json(run.file(LAUNCH_CONFIG), cfg.to_dict())
    _launch(["train", "--config", str(run.file(LAUNCH_CONFIG)), "--run-dir", str(run.path),
             "--threads", str(training_threads())], run)
    return run


def resume_training(run: RunDir) -> RunDir:
    """Launch a process that continues a stopped, interrupted or failed run from its last.pt; returns the run."""
    if run.is_active():
        raise UserError(f"run {run.name} is still running")
    if not run.file(LAST).exists():
        raise UserError(f"run {run.name} has no {LAST} to resume from (it stopped before its first save)")
    _launch(["train", "--resume", str(run.path), "--threads", str(training_threads())], run)
    return run


def log_tail(run: RunDir, lines: int = 12) -> str:
    """The last lines of the run's training log ('' when there is none)."""
    try:
        text = run.file(TRAIN_LOG).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def launch_problem(run: RunDir) -> str | None:
    """Why a launched run never got going (its process ended before writing a status), or None."""
    if run.status_raw() or not run.file(TRAIN_LOG).exists():
        return None
    errors = [line for line in log_tail(run, 50).splitlines() if "error" in line.lower()]
    if errors:
        return errors[-1].removeprefix("fercore: error: ")
    return None


# ---------------------------------------------------------------- checkpoints
@dataclass(frozen=True)
class CheckpointChoice:
    label: str
    path: Path


def checkpoint_choices() -> list[CheckpointChoice]:
    """The shipped model (when it exists), then each run's best.pt and last.pt, newest run first."""
    choices = []
    if SHIPPED_CHECKPOINT.is_file():
        choices.append(CheckpointChoice(f"shipped model ({SHIPPED_CHECKPOINT.name})", SHIPPED_CHECKPOINT))
    for run in list_runs(runs_dir()):
        summary = run.summary()
        if run.file(BEST).is_file():
            best = summary["best_val_acc"]
            note = f"val acc {best:.1%}" if best is not None else "no epoch yet"
            choices.append(CheckpointChoice(f"{run.name} · best ({note})", run.file(BEST)))
        if run.file(LAST).is_file():
            choices.append(CheckpointChoice(f"{run.name} · last (epoch {summary['epochs']})", run.file(LAST)))
    return choices


def warm_start_choices(classes: tuple[str, ...], read: Callable[[Path], dict[str, Any]]
                       ) -> list[tuple[CheckpointChoice, dict[str, Any]]]:
    """The checkpoints a new run over these classes can start from (--init), each with its card (read by read,
    which pages cache); unreadable files are left out."""
    found = []
    for choice in checkpoint_choices():
        try:
            card = read(choice.path)
        except UserError:
            continue
        if tuple(card.get("classes", ())) == tuple(classes):
            found.append((choice, card))
    return found


def teacher_choices(classes: tuple[str, ...], fingerprint: str, val_split: dict[str, Any],
                    read: Callable[[Path], dict[str, Any]]) -> list[CheckpointChoice]:
    """The checkpoints a new run can distil from (--teachers): same classes, same data, same validation carve."""
    return [choice for choice, card in warm_start_choices(classes, read)
            if card.get("data_fingerprint") == fingerprint and card.get("val_split") == val_split]


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def read_card(path: Path) -> dict[str, Any]:
    """A checkpoint's model card: the checkpoint without its weights and training state."""
    from fercore import checkpoint

    return checkpoint.model_card(checkpoint.read_checkpoint(path))


def card_rows(card: dict[str, Any], path: Path) -> dict[str, str]:
    """A model card as display rows: architecture, parameters, data, validation accuracy, training time.

    A shipped checkpoint carries its measured card (`python -m fercore ship`); a run's checkpoint has only its
    best epoch's metrics and the run's metrics.jsonl beside it.
    """
    measured = card.get("card") or {}
    metrics = card.get("metrics") or {}
    trained_on = card.get("trained_on") or {}
    if measured:
        tta = measured["validation"]["tta"]
        accuracy = (f"{tta['accuracy']:.1%} (macro F1 {tta['macro_f1']:.3f}, with TTA; best epoch "
                    f"{measured.get('best_epoch', '?')})")
        training = measured["training"]
        seconds, epochs, hardware = training["seconds"], training["epochs"], training["hardware"]
    else:
        accuracy = (f"{metrics['val_acc']:.1%} (macro F1 {metrics.get('val_macro_f1', 0):.3f}, epoch "
                    f"{metrics.get('epoch', '?')})" if "val_acc" in metrics else "?")
        history = RunDir(Path(path).parent).history()
        seconds, epochs = sum(e.get("seconds", 0) for e in history), len(history)
        hardware = (f"{trained_on.get('device', '?')}, {trained_on.get('threads', '?')} thread(s), "
                    f"{trained_on.get('amp', '?')}" if trained_on else "?")
    arch = card.get("arch", "?")
    return {
        "Architecture": f"{arch}: {measured['description']}" if measured else arch,
        "Parameters": f"{card['parameters'] / 1e6:.2f} M" if "parameters" in card else "?",
        "Classes": ", ".join(card.get("classes", [])),
        "Data": (f"{card.get('data_source', '?')}: {measured['data']['train']:,} train / "
                 f"{measured['data']['val']:,} validation faces, fingerprint {measured['data_fingerprint']}"
                 if measured else str(card.get("data_source", "?"))),
        "Validation accuracy": accuracy,
        "Training time": f"{_duration(seconds)} for {epochs} epoch(s)" if epochs else "?",
        "Trained on": hardware,
    }


# ---------------------------------------------------------------- data sets
def store_upload(name: str, content: bytes) -> Path:
    """Keep an uploaded archive.zip or fer2013.csv under the data folder, named by its content (stored once)."""
    suffix = Path(name).suffix.lower()
    if suffix not in DATA_UPLOAD_SUFFIXES:
        raise UserError(f"{name}: upload a .zip (Kaggle's archive.zip) or a .csv (fer2013.csv)")
    if len(content) > MAX_DATA_UPLOAD_MB * 1024**2:
        raise UserError(f"{name} is {len(content) / 1024**2:.0f} MB, over the limit of {MAX_DATA_UPLOAD_MB} MB")
    path = data_dir() / f"upload-{hashlib.sha256(content).hexdigest()[:20]}{suffix}"
    if not path.exists():
        atomic_write_bytes(path, content)
    return path


def class_samples(faces: FaceSet, per_class: int = 4, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Up to per_class random faces of each class, class by class, with their labels."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(faces.labels == i))[:per_class] for i in range(len(faces.classes))]
    order = np.concatenate(picked)
    return faces.images[order], [faces.classes[faces.labels[i]] for i in order]


def imbalance_warning(counts: dict[str, int]) -> str | None:
    """A sentence for a class set whose largest class dwarfs its smallest, or None."""
    rarest, commonest = min(counts, key=counts.get), max(counts, key=counts.get)
    if counts[rarest] * IMBALANCE_RATIO > counts[commonest]:
        return None
    return (f"Imbalanced classes: {rarest} has {counts[rarest]:,} images, {commonest} {counts[commonest]:,} "
            f"({counts[commonest] / max(1, counts[rarest]):.0f}x). Class weights 'sqrt' or 'balanced' help the "
            "rare classes.")


def face_grid(faces: np.ndarray, columns: int, zoom: int = 2, gap: int = 2) -> np.ndarray:
    """Tile uint8 faces [N,H,W] into one image, columns wide, each face enlarged zoom times (nearest pixel)."""
    n, h, w = faces.shape
    rows = max(1, -(-n // columns))
    grid = np.full((rows * (h * zoom + gap) - gap, columns * (w * zoom + gap) - gap), 255, np.uint8)
    for i, face in enumerate(faces):
        r, c = divmod(i, columns)
        y, x = r * (h * zoom + gap), c * (w * zoom + gap)
        grid[y:y + h * zoom, x:x + w * zoom] = np.kron(face, np.ones((zoom, zoom), np.uint8))
    return grid


def augmented(faces: np.ndarray, cfg: AugmentConfig, seed: int = 0) -> np.ndarray:
    """The faces [N,48,48] as training would see them under cfg (a fixed seed: a change shows only its own effect)."""
    import torch

    from fercore.augment import augment_batch

    x = torch.from_numpy(faces).unsqueeze(1).float() / 255
    out = augment_batch(x, cfg, torch.Generator().manual_seed(seed))
    return (out.squeeze(1) * 255).round().to(torch.uint8).numpy()


def single_augmentation(field: str, value: float) -> AugmentConfig:
    """An augmentation recipe with one augmentation switched on, for its preview."""
    from fercore.augment import AugmentConfig

    return dataclasses.replace(AugmentConfig.off(), **{field: value})


# ---------------------------------------------------------------- evaluation and prediction output
def predictions_csv(report: EvalReport) -> str:
    """One row per face: index, true class, predicted class and every class's probability."""
    buffer = io.StringIO()
    buffer.write(",".join(["index", "true", "predicted", *report.classes]) + "\n")
    for i, (label, predicted, probs) in enumerate(zip(report.labels, report.predictions, report.probabilities)):
        values = ",".join(f"{p:.5f}" for p in probs)
        buffer.write(f"{i},{report.classes[label]},{report.classes[predicted]},{values}\n")
    return buffer.getvalue()


@dataclass
class AnnotatedPhoto:
    prediction: ImagePrediction
    image: np.ndarray | None  # the photo (RGB) with every face boxed and labelled; None for a bad file


def annotate_photo(predictor: Predictor, content: bytes, name: str) -> AnnotatedPhoto:
    """Predict the faces of a photo file's bytes and draw them on it; a bad file gives an error, not an exception."""
    from fercore.data.images import as_rgb, open_image
    from fercore.draw import annotate
    from fercore.predict import ImagePrediction

    try:
        photo = as_rgb(open_image(content))  # decoded once, for the prediction and the drawing
    except UserError as exc:
        return AnnotatedPhoto(ImagePrediction(name, error=str(exc)), None)
    prediction = predictor.predict_photo(photo, name)
    note = "no face found: whole image classified" if prediction.no_face_found else None
    return AnnotatedPhoto(prediction, annotate(np.asarray(photo), prediction.faces, note))


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()
