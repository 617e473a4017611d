"""Checkpoints: plain dicts that load with torch.load(weights_only=True), a format tag and a model card."""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fercore import models
from fercore.atomic import atomic_write
from fercore.errors import UserError

FORMAT = "fercore-checkpoint"
VERSION = 1
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "fer2013.pt"


class CheckpointError(UserError):
    """A file that is not a usable fercore checkpoint."""


@dataclass
class LoadedModel:
    """A model ready for inference with what is needed to feed it."""

    model: nn.Module
    classes: tuple[str, ...]
    mean: float
    std: float
    size: int
    tta: bool
    info: dict[str, Any]  # the checkpoint without weights and training state: the model card


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically: a crash mid-save leaves the previous file intact."""
    atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle))


def make_checkpoint(model: nn.Module, arch: str, arch_args: dict, classes: tuple[str, ...],
                    mean: float, std: float, tta: bool, **extra: Any) -> dict[str, Any]:
    """The checkpoint dict: everything needed to rebuild and run the model, plus card fields in extra."""
    return {
        "format": FORMAT, "version": VERSION,
        "arch": arch, "arch_args": arch_args, "classes": list(classes),
        "preprocessing": {"size": 48, "grayscale": True, "mean": float(mean), "std": float(std)},
        "tta": bool(tta),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True and a clear message for anything that is not ours."""
    path = Path(path)
    if not path.is_file():
        if path.resolve() == SHIPPED:
            raise CheckpointError(f"the shipped model {path} is missing: train one with "
                                  "'python -m fercore train' and pass --checkpoint RUN_DIR/best.pt")
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(f"{path.name} is not a fercore checkpoint (refused to unpickle: {first[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, KeyError,
            IndexError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{path.name} is not a readable checkpoint (truncated or another format)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a fercore checkpoint (no '{FORMAT}' format tag)")
    if data.get("version", 0) > VERSION:
        raise CheckpointError(f"{path.name} has format version {data['version']}; this fercore reads up to {VERSION}")
    return data


def model_card(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint without weights or training state."""
    return {k: v for k, v in checkpoint.items() if k not in ("state_dict", "train_state")}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of a checkpoint in eval mode (float32 weights, whatever was stored)."""
    data = read_checkpoint(path)
    name = Path(path).name
    try:
        model = models.build(data["arch"], len(data["classes"]), **data.get("arch_args", {}))
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{name}: cannot build its architecture ({exc})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(f"{name}: weights do not match architecture {data['arch']!r} "
                              f"with {len(data['classes'])} classes") from None
    model.to(device).eval()
    pre = data["preprocessing"]
    return LoadedModel(model, tuple(data["classes"]), pre["mean"], pre["std"], pre["size"],
                       bool(data.get("tta", True)), model_card(data))

