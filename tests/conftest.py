"""Shared fixtures: a private decode cache, one thread, small generated data and a tiny trained model."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fercore.data.synthetic import generate_faces
from fercore.labels import EMOTIONS

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_folders(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decode cache and a runs folder of the test's own: no test reads or writes the user's."""
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("FERCORE_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))


def jpeg_bytes(array: np.ndarray, fmt: str = "JPEG", mode: str | None = None) -> bytes:
    img = Image.fromarray(array)
    if mode:
        img = img.convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


def write_image_tree(root: Path, per_class: int = 4, splits: tuple[str, ...] = ("train", "test"),
                     folder_names: dict[str, str] | None = None, seed: int = 0) -> Path:
    """Kaggle-style folders of synthetic faces: root/<split>/<emotion>/<n>.jpg (no split level if splits is ())."""
    faces, labels = generate_faces(per_class * len(EMOTIONS) * max(1, len(splits)), seed=seed)
    names = folder_names or {}
    for i, (face, label) in enumerate(zip(faces, labels)):
        split_dir = root / splits[i % len(splits)] if splits else root
        folder = split_dir / names.get(EMOTIONS[label], EMOTIONS[label])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.jpg").write_bytes(jpeg_bytes(face))
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    return write_image_tree(tmp_path / "archive")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A basic CNN trained for a few epochs on synthetic faces (seconds on one core)."""
    from fercore.augment import AugmentConfig
    from fercore.config import TrainConfig
    from fercore.train import run_training

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig(data="synthetic:2100", arch="basic", epochs=6, batch_size=64, optimizer="adamw", lr=3e-3,
                      schedule="onecycle", label_smoothing=0.0, threads=1, augment=AugmentConfig.off())
    with pytest.MonkeyPatch.context() as patch:  # the user's decode cache stays untouched, and so does the env
        patch.setenv("FERCORE_CACHE_DIR", str(tmp_path_factory.mktemp("session-cache")))
        run_training(cfg, run_dir)
    return run_dir / "best.pt"


@pytest.fixture(scope="session")
def leaning_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its last layer pushed towards happy: a model that gains some faces and loses others."""
    import torch

    from fercore.checkpoint import read_checkpoint, save_checkpoint

    raw = read_checkpoint(tiny_checkpoint)
    state = dict(raw["state_dict"])
    bias = next(name for name in reversed(list(state)) if name.endswith("bias") and state[name].numel() == 7)
    state[bias] = state[bias] + torch.tensor([0, 0, 0, 1.5, 0, 0, 0])
    path = tmp_path_factory.mktemp("leaning") / "leaning.pt"
    save_checkpoint(path, {**raw, "state_dict": state})
    return path


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    from skimage.data import astronaut

    return jpeg_bytes(astronaut())
