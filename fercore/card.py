"""The model card: measured facts about a checkpoint, stored inside it and written beside it as Markdown."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fercore import hardware, leakage, models
from fercore.atomic import atomic_write_bytes, atomic_write_jsonl
from fercore.checkpoint import (
    TEMPERATURE,
    LoadedModel,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
    with_calibration,
)
from fercore.config import matching_preset, recipe_flags
from fercore.data import FaceData, FaceSet, load_data
from fercore.errors import UserError
from fercore.evaluate import evaluate_faces, own_split
from fercore.metrics import calibration
from fercore.paths import shown
from fercore.runs import RunDir
from fercore.temperature import Temperatures, confidence_text, cross_fitted, fit_temperature

CARD_TITLE = "# Model card: "
STAGE_FIELDS = ("schedule", "lr", "seed", "init_from", "teachers", "distill", "swa_epochs")


def _ms_per_face(loaded: LoadedModel, batch: int, repeats: int = 30) -> float:
    """Median milliseconds per face on one CPU thread, with the model's TTA default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        faces = np.random.default_rng(0).integers(0, 255, (batch, 48, 48), dtype=np.uint8)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            loaded.proba(faces)
            times.append(time.perf_counter() - start)
        return float(np.median(times[3:]) * 1000 / batch)
    finally:
        torch.set_num_threads(threads)


def _faces(raw: dict[str, Any], source: FaceData, split: str) -> FaceSet:
    """The checkpoint's train or val faces: its own carve of its own data (refused for other data)."""
    if source.fingerprint != raw.get("data_fingerprint"):
        raise UserError(f"{source.source} is not the data this checkpoint was trained on")
    return own_split(raw, source, split)


def _description(arch: str, arch_args: dict[str, Any]) -> str:
    """The architecture's description, and how this model's arch_args change it (say wider stages)."""
    changes = models.options_text(arch_args)
    return models.ARCHITECTURES[arch].description + (f"; this one with {changes}" if changes else "")


def build_card(raw: dict[str, Any], source: FaceData, run: RunDir, name: str,
               epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """Evaluate on the checkpoint's own validation carve (as it runs by default, with and without TTA, and the
    float model when that differs) and time inference on this CPU; epochs: the run's history (RunDir.history)."""
    val = _faces(raw, source, "val")
    loaded = model_from_checkpoint(raw, name)
    as_float = model_from_checkpoint(raw, name, precision="float")
    float_differs = as_float.dtype != loaded.dtype
    validation = {"tta": evaluate_faces(loaded, val, tta=True).to_json(),
                  "no_tta": evaluate_faces(loaded, val, tta=False).to_json()}
    inference = {"dtype": loaded.dtype, "batch1": _ms_per_face(loaded, 1), "batch32": _ms_per_face(loaded, 32),
                 "cpu": hardware.cpu_name(), "threads": 1, "tta": loaded.tta}
    if float_differs:
        validation["float_tta"] = evaluate_faces(as_float, val, tta=True).to_json()
        inference |= {"float_dtype": as_float.dtype, "float_batch32": _ms_per_face(as_float, 32)}
    return {
        "architecture": raw["arch"], "description": _description(raw["arch"], raw.get("arch_args") or {}),
        "parameters": models.parameter_count(loaded.model), "classes": list(loaded.classes),
        "stored_weights": _stored_dtype(raw["state_dict"]),
        "recipe": raw["config"], "data_fingerprint": raw["data_fingerprint"],
        "data": {"train": len(_faces(raw, source, "train")), "val": len(val), "val_split": raw["val_split"]},
        "best_epoch": _best_epoch(raw["metrics"], epochs, run.name),
        "best_averaged_epochs": raw["metrics"].get("averaged_epochs"),
        "validation": validation,
        "training": {"epochs": len(epochs), "seconds": float(sum(e["seconds"] for e in epochs)),
                     "hardware": (f"{raw['trained_on'].get('processor') or hardware.cpu_name()}, "
                                  f"{raw['trained_on']['threads']} thread(s), {raw['trained_on']['amp']}"),
                     "device": raw["trained_on"]["device"], "stages": _stages(run, epochs)},
        "inference_ms_per_face": inference,
    }


def _with_temperature(raw: dict[str, Any], val: FaceSet, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint with its temperatures (fercore.temperature) for TTA and for one view, each fitted on its
    validation faces, and what scaling does there: calibration unscaled, and cross-fitted (the TTA one at the top,
    the one-view one under one_view)."""
    network = model_from_checkpoint({**raw, TEMPERATURE: 1.0}, name)
    fits = {}
    for views, tta in (("tta", True), ("one_view", False)):
        probs = network.proba(val.images, tta)
        fits[views] = {"value": fit_temperature(probs, val.labels),
                       "unscaled": calibration(probs, val.labels).to_json(),
                       "cross_fitted": calibration(cross_fitted(probs, val.labels, raw["config"]["seed"]),
                                                   val.labels).to_json()}
    temperatures = Temperatures(fits["tta"]["value"], fits["one_view"]["value"])
    return {**raw, TEMPERATURE: temperatures.to_json()}, fits["tta"] | {"one_view": fits["one_view"]}


def _stored_dtype(state_dict: dict[str, torch.Tensor]) -> str:
    """The dtype the file keeps the floating-point weights in: float32, or float16 when shipped with half."""
    return next((str(v.dtype).removeprefix("torch.") for v in state_dict.values() if v.is_floating_point()),
                "float32")


def _best_epoch(metrics: dict[str, Any], history: list[dict[str, Any]], run_name: str) -> int | None:
    """The checkpoint's epoch numbered as in the history (on across warm-started runs), not within its run."""
    epoch = metrics.get("epoch")
    if epoch is None:
        return None
    return epoch + sum(e["run"] != run_name for e in history)  # the epochs the runs before it gave


def _stages(run: RunDir, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run that made the weights (see RunDir.lineage): the epochs it gave and its recipe's moving parts."""
    stages = []
    for stage in run.lineage():
        config = stage.config()
        flags, unflagged = recipe_flags(config)
        stages.append({"run": stage.name, "epochs": sum(e.get("run") == stage.name for e in history),
                       "preset": matching_preset(config), "flags": flags, "unflagged": unflagged,
                       **{k: config.get(k) for k in STAGE_FIELDS}})
    return stages


def _flags(stage: dict[str, Any]) -> str:
    """The `fercore train` flags of a stage's recipe: the data (the card's data row says which), its preset and the
    flags that change it, and its teachers if it distilled."""
    flags = " --data PATH" + "".join(f" {flag}" for flag in stage["flags"])
    if stage.get("teachers"):
        flags += f" --teachers {' '.join(map(shown, stage['teachers']))} --distill {stage['distill']}"
    return flags


def _unflagged(stage: dict[str, Any]) -> str:
    """A clause on the options of a stage's recipe that no flag sets (see the recipe section), or nothing."""
    names = " and ".join(stage["unflagged"])
    return f", with {names} set as in the recipe below (by --config: no flag sets them)" if names else ""


def _distilled(stages: list[dict[str, Any]]) -> str:
    """A sentence on the teachers of the stages that distilled, or nothing."""
    teachers = sorted({shown(t) for stage in stages for t in stage.get("teachers") or []})
    if not teachers:
        return ""
    return (f" Distilled: part of its loss came from the averaged predictions of {len(teachers)} teacher "
            f"model(s), none of which had learned its validation faces (checked): "
            f"{', '.join(f'`{t}`' for t in teachers)}.")


def _repeats(validation: dict[str, Any]) -> str:
    """A clause on the validation faces that are also training faces (the data repeats them), or nothing."""
    seen, rest = validation.get("seen_in_training"), validation.get("accuracy_unseen")
    if not seen or rest is None:
        return ""
    return (f"; {seen:,} of the validation faces are, pixel for pixel, also training faces (the data repeats them): "
            f"{rest:.2%} with TTA on the others")


def _schedule(recipe: dict[str, Any]) -> str:
    """The learning rate's course, and the weight averaging if the recipe averages: "onecycle schedule peaking at lr
    0.05", "constant lr 0.005, averaging the weights of its last 20 epochs"."""
    lr, schedule = recipe["lr"], recipe["schedule"]
    words = {"onecycle": f"onecycle schedule peaking at lr {lr}", "constant": f"constant lr {lr}"}.get(
        schedule, f"{schedule} schedule from lr {lr}")
    averaged = recipe.get("swa_epochs") or 0
    return words + (f", averaging the weights of its last {averaged} epochs" if averaged else "")


def _provenance(card: dict[str, Any]) -> str:
    """How the weights were made: the `fercore train` run(s), each continuing the last."""
    stages = card["training"].get("stages") or []
    scratch = "Trained from scratch (no pretrained weights, no other data)"
    if len(stages) < 2:
        flags = _flags(stages[0]) if stages else ""
        init = f" --init {shown(stages[0]['init_from'])}" if stages and stages[0]["init_from"] else ""
        unflagged = _unflagged(stages[0]) if stages else ""
        return f"{scratch} with `python -m fercore train{flags}{init}`{unflagged}.{_distilled(stages)}"
    steps = []
    for number, stage in enumerate(stages):
        if number:
            start = (f"warm-started from the weights of run {stages[number - 1]['run']} "
                     f"(`--init {Path(stage['init_from']).name}`)")
        else:  # a first run can only have started from a checkpoint whose own runs are not on this machine
            start = f"warm-started from `{shown(stage['init_from'])}`" if stage["init_from"] else "from scratch"
        steps.append(f"{number + 1}. `python -m fercore train{_flags(stage)}`{_unflagged(stage)} "
                     f"(run `{stage['run']}`): {stage['epochs']} epochs {start}, {_schedule(stage)}, "
                     f"seed {stage['seed']}")
    return (f"{scratch} in {len(stages)} runs, each continuing the last:{_distilled(stages)}\n\n"
            + "\n".join(steps) + "\n")


def _training_time(seconds: float) -> str:
    """Hours to two decimals from an hour up (the shipped model's 4.18 h), else minutes or seconds."""
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _stored(card: dict[str, Any]) -> str:
    """A clause for weights the file keeps in less than float32 (every number of this card was measured so)."""
    dtype = card.get("stored_weights", "float32")
    return "" if dtype == "float32" else f"; weights stored in {dtype} (measured as stored)"


def card_markdown(card: dict[str, Any], name: str) -> str:
    """The card of checkpoint file `name` as the Markdown of the README.md beside it."""
    v, plain, as_float = (card["validation"].get(k) for k in ("tta", "no_tta", "float_tta"))
    rows = "\n".join(f"| {c} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
                     for c, r in v["per_class"].items())
    header = "| true \\ predicted | " + " | ".join(v["classes"]) + " |\n" + "|---" * (len(v["classes"]) + 1) + "|"
    confusion = "\n".join(f"| **{c}** | " + " | ".join(str(n) for n in row) + " |"
                          for c, row in zip(v["classes"], v["confusion"]))
    recipe, inf, data = card["recipe"], card["inference_ms_per_face"], card["data"]
    averaged = card.get("best_averaged_epochs")
    tta_default = ", the default" if inf["tta"] else ""
    aug = ", ".join(f"{k} {val}" for k, val in recipe["augment"].items())
    facts = {
        "classes": ", ".join(card["classes"]),
        "data": (f"`{shown(recipe['data'])}`, {data['train']:,} train / {data['val']:,} validation faces (stratified, "
                 f"seed {data['val_split']['seed']}, {data['val_split']['fraction']:.0%}); "
                 f"fingerprint `{card['data_fingerprint']}`{_repeats(v)}"),
        "validation accuracy": (f"**{v['accuracy']:.2%}** with TTA{tta_default} (face, 10% zoom, both mirrored), "
                                f"{plain['accuracy']:.2%} without"
                                + (f"; {as_float['accuracy']:.2%} with TTA in {inf['float_dtype']}"
                                   if as_float else "")),
        "validation macro F1": (f"**{v['macro_f1']:.3f}** with TTA, {plain['macro_f1']:.3f} without"
                                + (f"; {as_float['macro_f1']:.3f} in {inf['float_dtype']}" if as_float else "")),
        **({"validation confidence": confidence} if (confidence := confidence_text(card)) else {}),
        "inference dtype": ("int8 on CPUs with PyTorch's oneDNN engine (calibrated after training; "
                            "`--precision float` runs the float model)" if inf["dtype"] == "int8" else inf["dtype"])
                           + _stored(card),
        "best epoch": (f"{card['best_epoch']} of {card['training']['epochs']}"
                       + (f": the average of the weights of {averaged} epochs" if averaged else "")),
        "training time": f"{_training_time(card['training']['seconds'])} on {card['training']['hardware']}",
        "inference": (f"{inf['batch1']:.2f} ms per face alone, {inf['batch32']:.2f} ms per face in a batch of 32"
                      + (f" ({inf['float_batch32']:.2f} in {inf['float_dtype']})" if as_float else "")
                      + f"; TTA {'on' if inf['tta'] else 'off'}, one thread of {inf['cpu']}"),
    }
    table = "\n".join(f"| {k} | {val} |" for k, val in facts.items())
    recipe_line = (f"{recipe['optimizer'].upper()} (momentum {recipe['momentum']}, Nesterov {recipe['nesterov']}), "
                   f"{_schedule(recipe)}, weight decay {recipe['weight_decay']}, "
                   f"batch {recipe['batch_size']}, {recipe['epochs']} epochs, label smoothing "
                   f"{recipe['label_smoothing']}, class weights {recipe['class_weights']}, seed {recipe['seed']}.")
    curves = ("\nHow it learned: `metrics.jsonl` beside this file (one line per epoch; the app's Evaluate page plots "
              "it).\n" if card["training"]["epochs"] else "")
    return f"""{CARD_TITLE}`{name}`

**{card['architecture']}** ({card['parameters']:,} parameters): {card['description']}.
{_provenance(card)}

| | |
|---|---|
{table}

## Recipe{' of the last run' if len(card['training'].get('stages') or []) > 1 else ''}
{recipe_line}
Augmentation (batched on tensors): {aug}.

## Per-class report (validation, TTA, {inf['dtype']})
| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

## Confusion matrix (validation, TTA, {inf['dtype']}; rows = true class)
{header}
{confusion}
{curves}"""


def ship(checkpoint: Path, data: str, out: Path, run_dir: Path | None = None, half: bool = False) -> dict[str, Any]:
    """Write checkpoint + card to out, the card as README.md beside it, and the run's metrics.jsonl; half: store
    the weights in float16 (half the file), measured as stored."""
    readme = out.parent / "README.md"
    if out.is_dir():  # found now, not after minutes of measuring
        raise UserError(f"{out} is a directory: --out takes the file to write")
    if (out.parent / "config.json").is_file():  # its metrics.jsonl would be replaced: resume and curves break
        raise UserError(f"{out.parent} is a training run: ship into a folder of its own (checkpoints/ by default)")
    if readme.is_file():
        title = readme.read_text(errors="replace").partition("\n")[0]
        if not title.startswith(CARD_TITLE):
            raise UserError(f"{readme} is not a model card and would be overwritten: ship into a folder of its own")
        other = out.parent / title.removeprefix(CARD_TITLE).strip("`")
        if other.name != out.name and other.is_file():  # its card and curves would become this model's
            raise UserError(f"{readme} is the card of {other.name}, which is still there: ship into a folder of "
                            f"its own")
    run = RunDir(run_dir) if run_dir else RunDir(Path(checkpoint).parent)
    if run.is_active():  # its card would mix a best epoch, a history and a recipe of different moments
        raise UserError(f"run {run.path} is still training: ship it once it ends, or stop it first "
                        f"(python -m fercore runs --stop {run.path})")
    source = load_data(data)
    raw = read_checkpoint(checkpoint)
    if half:
        raw = {**raw, "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in raw["state_dict"].items()}}
    train_faces = _faces(raw, source, "train").images
    raw = with_calibration(raw, train_faces, raw["config"]["seed"])
    if leakage.DIGESTS not in raw:  # a checkpoint from before they were kept
        raw[leakage.DIGESTS] = leakage.stored_form(leakage.digests(train_faces))
    epochs = run.history()
    raw, temperature = _with_temperature(raw, _faces(raw, source, "val"), Path(checkpoint).name)
    card = build_card(raw, source, run, Path(checkpoint).name, epochs) | {"temperature": temperature}
    save_checkpoint(out, {**raw, "card": card})
    atomic_write_bytes(readme, card_markdown(card, out.name).encode())
    if epochs:  # the epoch lines only: the learning curves, without the progress lines within epochs
        atomic_write_jsonl(out.parent / "metrics.jsonl", epochs)
    else:  # no run beside the checkpoint: an earlier model's curves must not pass for this one's
        (out.parent / "metrics.jsonl").unlink(missing_ok=True)
    return card
