"""The checkpoints the app offers (the shipped model, models shipped beside it, each run's best and last) and their
cards as rows."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fercore.errors import UserError
from fercore.paths import SHIPPED_CHECKPOINT, runs_dir, shown
from fercore.runs import BEST, LAST, RunDir, list_runs
from fercore.temperature import confidence_text


@dataclass(frozen=True)
class CheckpointChoice:
    label: str
    path: Path


def checkpoint_choices() -> list[CheckpointChoice]:
    """The shipped model (when it exists), the models shipped beside it (shipped_beside), then each run's best.pt
    and last.pt, newest run first; a run's checkpoint is listed once, as the run's."""
    runs = run_choices()
    listed = {choice.path for choice in runs}
    shipped = [CheckpointChoice(f"shipped model ({SHIPPED_CHECKPOINT.name})", SHIPPED_CHECKPOINT)
               ] if SHIPPED_CHECKPOINT.is_file() else []
    return shipped + [choice for choice in shipped_beside() if choice.path not in listed] + runs


def shipped_beside() -> list[CheckpointChoice]:
    """Every other .pt in the shipped model's folder and in its immediate subfolders, where `python -m fercore ship
    --out checkpoints/NAME/NAME.pt` puts a model of one's own (with its card), labelled by its path there."""
    folder = SHIPPED_CHECKPOINT.parent
    found = sorted({*folder.glob("*.pt"), *folder.glob("*/*.pt")} - {SHIPPED_CHECKPOINT})
    return [CheckpointChoice(f"{path.relative_to(folder).as_posix()} (shipped)", path)
            for path in found if path.is_file()]


def run_choices() -> list[CheckpointChoice]:
    """Each run's best.pt and last.pt, newest run first."""
    choices = []
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
    """The checkpoints of these classes (those a new run can start from with --init, or that Evaluate compares),
    each with its card (read by read, which pages cache); unreadable files are left out."""
    found = []
    for choice in checkpoint_choices():
        try:
            card = read(choice.path)
        except (UserError, OSError):  # unreadable, or deleted since it was listed
            continue
        if tuple(card.get("classes", ())) == tuple(classes):
            found.append((choice, card))
    return found


def teacher_choices(classes: tuple[str, ...], fingerprint: str, val_split: dict[str, Any],
                    read: Callable[[Path], dict[str, Any]]) -> list[CheckpointChoice]:
    """The checkpoints the Train page offers as teachers: same classes, same data, same validation carve (the
    engine would also take a model of other data that never saw the validation faces; the menu keeps to the
    models sure to pass)."""
    return [choice for choice, card in warm_start_choices(classes, read)
            if card.get("data_fingerprint") == fingerprint and card.get("val_split") == val_split]


def duration(seconds: float) -> str:
    """A span as people say it: 42 s, 1 min 05 s, 12 min, 2 h 05 min."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds < 60 else f"1 min {seconds - 60:02.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def read_card(path: Path) -> dict[str, Any]:
    """A checkpoint's model card: the checkpoint without its weights and training state."""
    from fercore import checkpoint

    return checkpoint.model_card(checkpoint.read_checkpoint(path))


def card_rows(card: dict[str, Any], path: Path) -> dict[str, str]:
    """A model card as display rows: architecture, parameters, data, validation accuracy, training time, and how
    the run made its weights when it did more than train them (recipe_rows).

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
        **({"Confidence": confidence} if measured and (confidence := confidence_text(measured)) else {}),
        "Training time": f"{duration(seconds)} for {epochs} epoch(s)" if epochs else "?",
        "Trained on": hardware,
        **recipe_rows(card.get("config") or {}, metrics),
    }


def recipe_rows(recipe: dict[str, Any], metrics: dict[str, Any]) -> dict[str, str]:
    """Rows for a warm start, teachers and weight averaging, each when the run's recipe had it; metrics: the
    checkpoint's epoch's (averaged_epochs when its weights are an average)."""
    rows = {}
    if recipe.get("init_from"):
        rows["Warm-started from"] = shown(recipe["init_from"])
    if teachers := recipe.get("teachers"):
        live = "; they labelled every augmented batch" if recipe.get("teaching") == "live" else ""
        rows["Distilled from"] = (f"{', '.join(map(shown, teachers))} (their averaged predictions weigh "
                                  f"{recipe.get('distill', '?')} in the loss{live})")
    if swa_epochs := recipe.get("swa_epochs"):
        averaged = metrics.get("averaged_epochs")
        rows["Weight averaging"] = f"over the last {swa_epochs} epochs: these weights are " + (
            f"the average of {averaged} epoch(s)" if averaged else "the trained ones, not an average")
    return rows
