"""Checkpoints: plain dicts that load with torch.load(weights_only=True), a format tag and a model card."""
from __future__ import annotations

import errno
import pickle
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from fercore import hardware, leakage, models, quantize
from fercore.atomic import atomic_write
from fercore.errors import UserError
from fercore.inference import Progress, predict_proba
from fercore.paths import SHIPPED_CHECKPOINT
from fercore.quiet import no_warnings
from fercore.temperature import Temperatures, sharpen

FORMAT = "fercore-checkpoint"
VERSION = 1
PRECISIONS = ("auto", "int8", "float")  # auto: int8 on a CPU when the checkpoint is calibrated, else float
CALIBRATION = "int8_calibration"
TEMPERATURE = "temperature"  # by ship: {"tta": T, "one_view": T} (fercore.temperature; a number: both; absent: 1)
FULL_DISK_BYTES = 1 << 20  # a failed save with less free than this was the disk filling up


class CheckpointError(UserError):
    """A file that is not a usable fercore checkpoint."""


@dataclass
class LoadedModel:
    """A model ready for inference with what is needed to feed it."""

    model: nn.Module  # the float model (export, parameter counts)
    classes: tuple[str, ...]
    mean: float
    std: float
    size: int
    tta: bool
    info: dict[str, Any]  # the checkpoint without weights and training state: the model card
    runner: nn.Module  # what inference runs: the int8 version of model, or model itself
    dtype: str  # what inference runs at: int8, bfloat16 or float32
    learned: np.ndarray | None = None  # digests of the faces it trained on (fercore.leakage), if kept
    temperature: Temperatures = Temperatures()  # how its probabilities are scaled (1: as the network gives them)

    def proba(self, faces: np.ndarray | torch.Tensor, tta: bool | None = None,
              on_progress: Progress | None = None) -> np.ndarray:
        """Class probabilities [N,C] for uint8 faces [N,48,48], with the checkpoint's TTA unless told, scaled by
        its temperature for those views."""
        use_tta = self.tta if tta is None else tta
        probs = predict_proba(self.runner, faces, self.mean, self.std, tta=use_tta, amp=self.dtype != "int8",
                              on_progress=on_progress).numpy()
        return sharpen(probs, self.temperature.for_views(use_tta))


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically: a crash mid-save leaves the previous file intact."""
    def write(handle: IO[bytes]) -> None:
        try:
            torch.save(checkpoint, handle)
        except RuntimeError as exc:  # torch's writer says "unexpected pos ..." when a write fails
            if shutil.disk_usage(Path(path).parent).free < FULL_DISK_BYTES:
                raise OSError(errno.ENOSPC, "No space left on device", str(path)) from exc
            raise OSError(f"cannot write {path}: {str(exc).splitlines()[0]}") from exc
    atomic_write(Path(path), write)


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


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file path names: a run directory stands for its best model, best.pt."""
    path = Path(path)
    if not path.is_dir():
        return path
    if not (path / "best.pt").is_file():
        raise CheckpointError(f"{path} is a directory without a best.pt: give a checkpoint file")
    return path / "best.pt"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True and a clear message for anything that is not ours."""
    path = checkpoint_file(path)
    if not path.is_file():
        if path.resolve() == SHIPPED_CHECKPOINT:
            raise CheckpointError(f"the shipped model {path} is missing: restore it (git checkout -- "
                                  "checkpoints/fer2013.pt), or train one with 'python -m fercore train' and pass "
                                  "--checkpoint RUN_DIR/best.pt")
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with no_warnings():  # torch warns about TorchScript archives before refusing them
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path.name} is not a fercore checkpoint: it holds objects other than tensors and "
                              "plain values, which are never unpickled") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, KeyError,
            IndexError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{path.name} is not a readable checkpoint (truncated or another format)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a fercore checkpoint (no '{FORMAT}' format tag)")
    version = data.get("version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"{path.name} is a damaged fercore checkpoint: its version is {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path.name} has format version {version}; this fercore reads up to {VERSION}")
    if missing := _missing_fields(data):
        raise CheckpointError(f"{path.name} is a damaged fercore checkpoint: {missing} missing or malformed")
    return data


def _missing_fields(data: dict[str, Any]) -> str:
    """The fields a fercore checkpoint must have that data lacks or holds in the wrong type, comma-separated."""
    pre = data.get("preprocessing")
    checks = {
        "arch": isinstance(data.get("arch"), str),
        "classes": isinstance(data.get("classes"), list) and bool(data["classes"])
        and all(isinstance(c, str) for c in data["classes"]),
        "state_dict": isinstance(data.get("state_dict"), dict),
        "preprocessing": isinstance(pre, dict) and all(isinstance(pre.get(k), (int, float))
                                                       for k in ("size", "mean", "std")),
        leakage.DIGESTS: leakage.DIGESTS not in data or leakage.well_formed(data[leakage.DIGESTS]),
    }
    return ", ".join(name for name, ok in checks.items() if not ok)


def model_card(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint without weights, training state or the digests of its training faces."""
    return {k: v for k, v in checkpoint.items()
            if k not in ("state_dict", "train_state", CALIBRATION, leakage.DIGESTS)}


def _runner(model: nn.Module, data: dict[str, Any], device: torch.device, precision: str,
            name: str) -> tuple[nn.Module, str]:
    """The module inference runs for the asked precision, and the dtype it runs at.

    auto falls back to the float model when the int8 copy cannot be built (say a calibration from another
    PyTorch); int8 asked for explicitly is an error then."""
    if precision not in PRECISIONS:
        raise CheckpointError(f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    calibration = data.get(CALIBRATION)
    int8_possible = device.type == "cpu" and quantize.available() and bool(calibration)
    if precision == "int8" and not int8_possible:
        why = ("it has no int8 calibration (ship it, or train with this fercore)" if not calibration
               else "int8 runs on CPUs with PyTorch's oneDNN engine only")
        raise CheckpointError(f"{name}: cannot run in int8: {why}")
    if precision == "float" or not int8_possible:
        dtype = hardware.amp_dtype(device)
        return model, str(dtype).replace("torch.", "") if dtype else "float32"
    try:
        return quantize.to_int8(model, calibration), "int8"
    except Exception as exc:  # whatever FX raises: the float model still answers
        if precision == "int8":
            raise CheckpointError(f"{name}: cannot run in int8 ({str(exc).splitlines()[0][:160]})") from None
        return _runner(model, data, device, "float", name)


def load_model(path: str | Path, device: str | torch.device = "cpu", precision: str = "auto") -> LoadedModel:
    """Rebuild the model of a checkpoint in eval mode on device (a torch.device, or auto/cpu/cuda/mps), with
    its int8 runner on a CPU when precision allows."""
    return model_from_checkpoint(read_checkpoint(path), Path(path).name, device, precision)


def model_from_checkpoint(data: dict[str, Any], name: str, device: str | torch.device = "cpu",
                          precision: str = "auto") -> LoadedModel:
    """load_model for a checkpoint dict already read; name is what messages call it."""
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
    device = hardware.pick_device(device) if isinstance(device, str) else device
    model.to(device).eval()
    runner, dtype = _runner(model, data, device, precision, name)
    pre = data["preprocessing"]
    return LoadedModel(model, tuple(data["classes"]), pre["mean"], pre["std"], pre["size"],
                       bool(data.get("tta", True)), model_card(data), runner, dtype, leakage.learned_digests(data),
                       temperatures_of(data, name))


def temperatures_of(data: dict[str, Any], name: str) -> Temperatures:
    """A checkpoint's temperatures: per view, or one number for both (checkpoints shipped before per-view ones),
    1 for both when it has none."""
    stored = data.get(TEMPERATURE, 1.0)
    values = stored if isinstance(stored, dict) else {"tta": stored, "one_view": stored}
    for value in (values.get("tta"), values.get("one_view")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
            raise CheckpointError(f"{name}: its temperature {stored!r} is not a positive number (or one per view)")
    return Temperatures(float(values["tta"]), float(values["one_view"]))


def with_calibration(data: dict[str, Any], train_faces: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The checkpoint with int8 calibration from its training faces; unchanged if calibrated or int8 is absent."""
    if CALIBRATION in data or not quantize.available():
        return data
    loaded = model_from_checkpoint(data, "checkpoint", precision="float")
    return {**data, CALIBRATION: quantize.calibrate(loaded.model, train_faces, loaded.mean, loaded.std, seed)}
