"""The synthetic face generator: shapes, balance, determinism and that a small CNN can learn the expressions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fercore.data.synthetic import generate_faces
from fercore.labels import EMOTIONS


def test_shapes_dtype_and_range() -> None:
    faces, labels = generate_faces(70, seed=3)
    assert faces.shape == (70, 48, 48) and faces.dtype == np.uint8
    assert labels.shape == (70,) and labels.dtype == np.int64
    assert faces.min() < 40 and faces.max() > 215
    assert np.percentile(faces, 95) - np.percentile(faces, 5) > 100
    assert set(labels.tolist()) == set(range(len(EMOTIONS)))


def test_other_size() -> None:
    faces, _ = generate_faces(5, size=64)
    assert faces.shape == (5, 64, 64)


def test_classes_are_balanced() -> None:
    _, labels = generate_faces(703, seed=1)
    counts = np.bincount(labels, minlength=len(EMOTIONS))
    assert counts.max() - counts.min() <= 1 and counts.sum() == 703


def test_deterministic_per_seed() -> None:
    a_faces, a_labels = generate_faces(40, seed=7)
    b_faces, b_labels = generate_faces(40, seed=7)
    c_faces, c_labels = generate_faces(40, seed=8)
    assert np.array_equal(a_faces, b_faces) and np.array_equal(a_labels, b_labels)
    assert not np.array_equal(a_faces, c_faces)
    assert not np.array_equal(a_labels, c_labels)


def test_faces_differ_from_each_other() -> None:
    faces, _ = generate_faces(20, seed=0)
    flat = faces.reshape(20, -1).astype(np.int16)
    assert len({f.tobytes() for f in faces}) == 20
    assert np.abs(flat[:, None] - flat[None]).mean() > 10


def test_subset_of_emotions_uses_global_indices() -> None:
    wanted = ("sad", "happy")
    _, labels = generate_faces(50, seed=2, emotions=wanted)
    assert set(labels.tolist()) == {EMOTIONS.index("happy"), EMOTIONS.index("sad")}
    assert np.bincount(labels).max() == 25


def test_empty_and_bad_arguments() -> None:
    faces, labels = generate_faces(0)
    assert faces.shape == (0, 48, 48) and labels.shape == (0,)
    with pytest.raises(ValueError):
        generate_faces(5, emotions=("happy", "bored"))
    with pytest.raises(ValueError):
        generate_faces(5, emotions=())
    with pytest.raises(ValueError):
        generate_faces(-1)


def _standardise(faces: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(faces).float().unsqueeze(1) / 255
    return (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1e-3)


def test_a_small_cnn_learns_the_expressions() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train_x, train_y = generate_faces(2000, seed=1)
    test_x, test_y = generate_faces(700, seed=2)
    x, y = _standardise(train_x), torch.from_numpy(train_y)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 6 * 6, len(EMOTIONS)),
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(6):
        for batch in torch.randperm(len(x)).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimiser.step()
    with torch.no_grad():
        predicted = net(_standardise(test_x)).argmax(1).numpy()
    accuracy = float((predicted == test_y).mean())
    assert accuracy > 0.6, f"held-out accuracy {accuracy:.3f}"  # chance is 0.14; measured about 0.75
