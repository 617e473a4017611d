"""Knowledge distillation: the teachers' soft targets, their checks, the loss, and a run that follows them."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import jpeg_bytes, write_image_tree
from torch import nn

from fercore import leakage
from fercore import train as train_module
from fercore.checkpoint import load_model
from fercore.config import TrainConfig
from fercore.data import load_data
from fercore.distill import DistillationLoss, LiveTeachers, teacher_probabilities
from fercore.errors import UserError
from fercore.labels import EMOTIONS
from fercore.leakage import Holdout
from fercore.runs import RunDir
from fercore.train import resume_training, run_training

CPU = torch.device("cpu")


def _holdout(source: str, fraction: float = 0.1) -> Holdout:
    """The validation faces of a run on source with the given carve (seed 0)."""
    data = load_data(source)
    train, val = (data.split(name, EMOTIONS, fraction, 0) for name in ("train", "val"))
    return Holdout(val.images, leakage.digests(train.images), data.fingerprint, {"fraction": fraction, "seed": 0},
                   carved=True)


def test_teacher_probabilities_average_the_teachers(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_data("synthetic:2100")
    faces = data.split("train", EMOTIONS, 0.1, 0).images[:50]
    trained = load_model(tiny_checkpoint)
    alone = torch.as_tensor(trained.proba(faces))
    uniform = torch.full_like(alone, 1 / len(EMOTIONS))
    teachers = {"trained.pt": trained, "knows-nothing.pt": _Uniform(trained)}
    monkeypatch.setattr("fercore.distill.load_model", lambda path, *_: teachers[path])
    averaged = teacher_probabilities(list(teachers), faces, EMOTIONS, _holdout("synthetic:2100"), CPU)
    assert torch.allclose(averaged, (alone + uniform) / 2, atol=1e-5)
    assert torch.allclose(averaged.sum(1), torch.ones(len(faces)), atol=1e-5)


def test_a_teacher_teaches_its_networks_probabilities_not_its_scaled_ones(tiny_checkpoint: Path,
                                                                          tmp_path: Path) -> None:
    from fercore.checkpoint import TEMPERATURE, read_checkpoint, save_checkpoint

    scaled = tmp_path / "scaled.pt"
    save_checkpoint(scaled, {**read_checkpoint(tiny_checkpoint), TEMPERATURE: 0.5})
    faces = load_data("synthetic:2100").split("train", EMOTIONS, 0.1, 0).images[:20]
    taught = teacher_probabilities([scaled], faces, EMOTIONS, _holdout("synthetic:2100"), CPU)
    assert torch.allclose(taught, torch.as_tensor(load_model(tiny_checkpoint).proba(faces)), atol=1e-6)
    assert not np.allclose(load_model(scaled).proba(faces), taught.numpy(), atol=1e-3)  # it says other numbers


class _Uniform:
    """A loaded model's stand-in that predicts every class equally."""

    def __init__(self, loaded: object):
        self.classes, self.info, self.learned = loaded.classes, loaded.info, loaded.learned

    def proba(self, faces: np.ndarray, on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        for done in range(10, len(faces) + 10, 10):
            if on_progress:
                on_progress(min(done, len(faces)), len(faces))
        return np.full((len(faces), len(self.classes)), 1 / len(self.classes), dtype=np.float32)


def test_the_teachers_pass_counts_the_faces_of_every_teacher(tiny_checkpoint: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    faces = load_data("synthetic:2100").split("train", EMOTIONS, 0.1, 0).images[:25]
    stand_in = _Uniform(load_model(tiny_checkpoint))
    monkeypatch.setattr("fercore.distill.load_model", lambda path, *_: stand_in)
    told: list[tuple[int, int]] = []
    teacher_probabilities(["a.pt", "b.pt"], faces, EMOTIONS, _holdout("synthetic:2100"), CPU,
                          lambda done, total: told.append((done, total)))
    assert told == [(10, 50), (20, 50), (25, 50), (35, 50), (45, 50), (50, 50)]


def test_a_distilled_run_tells_how_far_its_teachers_pass_is(tiny_checkpoint: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """While it starts, status.json and on_progress say how many faces the teachers have predicted; once it
    trains, the status no longer says so."""
    monkeypatch.setattr(train_module, "PROGRESS_SECONDS", 0.0)  # told after every pass of the teacher
    run_dir = tmp_path / "kd"
    told: list[dict] = []

    def record(event: dict) -> None:
        if event["type"] == "startup":
            told.append(event)
            status = RunDir(run_dir).status_raw()
            assert status["state"] == "starting" and status["startup"] == {k: event[k] for k in status["startup"]}

    cfg = TrainConfig(data="synthetic:700", arch="basic", epochs=1, batch_size=32, threads=1, amp="off",
                      teachers=[str(tiny_checkpoint)])
    run_training(cfg, run_dir, on_progress=record)
    faces = len(load_data("synthetic:700").split("train", EMOTIONS, 0.1, 0).labels)
    assert len(told) > 1 and [e["done"] for e in told] == sorted(e["done"] for e in told)
    assert {e["phase"] for e in told} == {"teachers"} and {e["total"] for e in told} == {faces}
    assert told[0]["eta_s"] is None and told[-1]["done"] == faces and told[-1]["eta_s"] == 0
    assert RunDir(run_dir).status_raw()["startup"] is None


def test_a_teacher_that_learned_the_validation_faces_or_other_classes_is_refused(tiny_checkpoint: Path) -> None:
    faces = load_data("synthetic:2100").split("train", EMOTIONS, 0.1, 0).images[:8]
    with pytest.raises(UserError, match=f"teacher {tiny_checkpoint} learned [0-9,]+ of this run's [0-9,]+ validation "
                                        "faces"):
        teacher_probabilities([tiny_checkpoint], faces, EMOTIONS, _holdout("synthetic:2100", 0.2), CPU)
    with pytest.raises(UserError, match="predicts"):
        teacher_probabilities([tiny_checkpoint], faces, EMOTIONS[:3], _holdout("synthetic:2100"), CPU)


def test_a_teacher_trained_on_other_faces_teaches(tiny_checkpoint: Path) -> None:
    """Its digests show it never saw this run's validation faces, though its data differs (it was refused
    before the digests: with a fingerprint alone, other data might hold the same faces)."""
    other = _holdout("synthetic:700")
    assert not np.isin(other.leakable, load_model(tiny_checkpoint).learned).any()
    faces = load_data("synthetic:700").split("train", EMOTIONS, 0.1, 0).images[:8]
    assert teacher_probabilities([tiny_checkpoint], faces, EMOTIONS, other, CPU).shape == (8, len(EMOTIONS))


def test_distillation_loss_mixes_label_and_teacher_cross_entropy() -> None:
    logits = torch.randn(6, 7, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    soft = torch.rand(6, 7).softmax(1)
    label_loss = nn.CrossEntropyLoss()(logits, labels)
    soft_loss = nn.CrossEntropyLoss()(logits, soft)  # PyTorch's cross-entropy with probability targets
    assert torch.allclose(DistillationLoss(nn.CrossEntropyLoss(), 0.7)(logits, labels, soft),
                          0.3 * label_loss + 0.7 * soft_loss)
    one_hot = torch.nn.functional.one_hot(labels, 7).float()
    assert torch.allclose(DistillationLoss(nn.CrossEntropyLoss(), 1.0)(logits, labels, one_hot), label_loss)


def test_a_distilled_run_learns_what_its_teachers_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Teachers that always say 'happy', at full weight, override the labels: the student says 'happy'."""
    happy = EMOTIONS.index("happy")

    def always_happy(paths: list[str], faces: np.ndarray, *args: object) -> torch.Tensor:
        assert paths == ["teacher.pt"]
        return torch.nn.functional.one_hot(torch.full((len(faces),), happy), len(EMOTIONS)).float()

    monkeypatch.setattr(train_module, "teacher_probabilities", always_happy)
    cfg = TrainConfig(data="synthetic:700", arch="basic", epochs=2, batch_size=32, lr=0.02, schedule="cosine",
                      threads=1, amp="off", teachers=["teacher.pt"], distill=1.0)
    run_training(cfg, tmp_path / "kd")
    val = load_data("synthetic:700").split("val", EMOTIONS, 0.1, 0)
    predicted = load_model(tmp_path / "kd" / "last.pt", precision="float").proba(val.images).argmax(1)
    assert (predicted == happy).mean() > 0.9
    assert RunDir(tmp_path / "kd").config()["teachers"] == ["teacher.pt"]


@pytest.fixture
def teacher_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The trainer's teachers say every class is equally likely for every face; returns how many faces each of
    their passes saw."""
    calls: list[int] = []

    def teachers(paths: list[str], faces: np.ndarray, *args: object) -> torch.Tensor:
        calls.append(len(faces))
        return torch.full((len(faces), len(EMOTIONS)), 1 / len(EMOTIONS))

    monkeypatch.setattr(train_module, "teacher_probabilities", teachers)
    return calls


@pytest.mark.parametrize("damage", [None, "truncated", "not a tensor"])
def test_a_resumed_distilled_run_reuses_the_teachers_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             teacher_passes: list[int], damage: str | None) -> None:
    monkeypatch.setattr(train_module, "PROGRESS_SECONDS", 0.0)  # a progress record after every step
    cfg = TrainConfig(data="synthetic:700", arch="basic", epochs=2, batch_size=32, threads=1, amp="off",
                      teachers=["teacher.pt"])
    run_dir = tmp_path / "kd"

    def stop_in_epoch_2(record: dict) -> None:
        if record["type"] == "progress" and (record["epoch"], record["step"]) == (2, 3):
            RunDir(run_dir).request_stop()

    assert run_training(cfg, run_dir, on_progress=stop_in_epoch_2)["stopped"]
    kept = torch.load(run_dir / train_module.TEACHER_TARGETS, weights_only=True)
    assert teacher_passes == [len(kept)] and torch.allclose(kept, torch.tensor(1 / len(EMOTIONS)))
    targets = run_dir / train_module.TEACHER_TARGETS
    if damage == "truncated":
        targets.write_bytes(targets.read_bytes()[:200])
    elif damage == "not a tensor":
        torch.save({"targets": kept}, targets)
    assert resume_training(run_dir)["epochs"] == 2
    # the resume read the kept targets instead of running the teachers again; damaged ones, it made again
    assert len(teacher_passes) == (1 if damage is None else 2)
    assert torch.equal(torch.load(targets, weights_only=True), kept)


def test_a_resume_on_changed_data_is_refused_before_the_teachers_run(tmp_path: Path,
                                                                     teacher_passes: list[int]) -> None:
    folder = write_image_tree(tmp_path / "faces", per_class=10, splits=())
    cfg = TrainConfig(data=str(folder), arch="basic", epochs=2, batch_size=16, threads=1, amp="off",
                      teachers=["teacher.pt"])
    run_dir = tmp_path / "kd"
    assert run_training(cfg, run_dir, on_progress=lambda record: record["type"] == "epoch"
                        and RunDir(run_dir).request_stop())["stopped"]
    kept = (run_dir / train_module.TEACHER_TARGETS).read_bytes()
    (folder / "happy" / "new.jpg").write_bytes(jpeg_bytes(np.full((48, 48), 128, np.uint8)))  # one face more
    with pytest.raises(UserError, match="changed since this run started: cannot resume"):
        resume_training(run_dir)
    assert len(teacher_passes) == 1 and (run_dir / train_module.TEACHER_TARGETS).read_bytes() == kept  # not run again


def test_a_new_run_never_takes_targets_left_in_its_directory(tmp_path: Path, teacher_passes: list[int]) -> None:
    run_dir = tmp_path / "kd"
    run_dir.mkdir()
    faces = len(load_data("synthetic:700").split("train", EMOTIONS, 0.1, 0).labels)
    stale = torch.zeros(faces, len(EMOTIONS))  # another attempt's targets, of the very shape this run needs
    stale[:, 0] = 1
    torch.save(stale, run_dir / train_module.TEACHER_TARGETS)
    cfg = TrainConfig(data="synthetic:700", arch="basic", epochs=1, batch_size=32, threads=1, amp="off",
                      teachers=["teacher.pt"])
    run_training(cfg, run_dir)
    kept = torch.load(run_dir / train_module.TEACHER_TARGETS, weights_only=True)
    assert kept.shape == stale.shape and torch.allclose(kept, torch.tensor(1 / len(EMOTIONS)))


def test_distillation_weight_is_checked() -> None:
    with pytest.raises(UserError, match="distillation weight"):
        TrainConfig(distill=0).validate()


def test_live_teachers_see_the_students_batch_in_their_own_normalisation(tiny_checkpoint: Path) -> None:
    from fercore.inference import to_input

    teacher = load_model(tiny_checkpoint, precision="float")
    faces = torch.from_numpy(load_data("synthetic:2100").split("train", EMOTIONS, 0.1, 0).images[:16])
    student_mean, student_std = teacher.mean + 0.1, teacher.std * 1.5  # another normalisation than the teacher's
    student_input = to_input(faces, student_mean, student_std)
    taught = LiveTeachers([teacher], amp=None)(student_input, student_mean, student_std)
    expected = teacher.model(to_input(faces, teacher.mean, teacher.std)).softmax(1)
    assert torch.allclose(taught, expected, atol=1e-5) and not taught.requires_grad
    assert torch.allclose(LiveTeachers([teacher, teacher], None)(student_input, student_mean, student_std),
                          expected, atol=1e-5)  # two alike: their average is theirs


def test_mixed_fixed_targets_teach_what_each_face_of_the_mix_would() -> None:
    """The fixed targets of a mixed batch are mixed as its faces (lam and 1 - lam of the reversed batch's): the
    loss against them is the mix of the losses against each face's own targets."""
    logits, labels = torch.randn(6, 7), torch.tensor([0, 1, 2, 3, 4, 5])
    soft, lam = torch.rand(6, 7).softmax(1), 0.7
    loss = DistillationLoss(nn.CrossEntropyLoss(), 0.6)
    mixed = soft * lam + soft.flip(0) * (1 - lam)
    assert torch.allclose(loss(logits, labels, mixed),
                          lam * loss(logits, labels, soft) + (1 - lam) * loss(logits, labels, soft.flip(0)))


class _SaysHappyWhenBright(nn.Module):
    """A teacher network: happy for a face brighter than the middle of its input range, sad otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x.mean(dim=(1, 2, 3)) > 0).float()
        logits = torch.full((len(x), len(EMOTIONS)), -20.0)
        logits[:, EMOTIONS.index("happy")] = 20 * bright - 10
        logits[:, EMOTIONS.index("sad")] = 10 - 20 * bright
        return logits


def test_a_live_taught_run_learns_from_the_teachers_view_of_each_training_batch(
        tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step's soft targets are the live teachers' probabilities for exactly the batch the student trains on
    (augmented, mixed), no targets are computed beforehand, and a resumed run ends where a straight one does."""
    teacher = load_model(tiny_checkpoint, precision="float")
    teacher.model = _SaysHappyWhenBright()
    monkeypatch.setattr(train_module, "load_teachers", lambda paths, *_args, **_kw: [teacher] * len(paths))
    monkeypatch.setattr(train_module, "teacher_probabilities", lambda *_: pytest.fail("fixed targets computed"))
    monkeypatch.setattr(train_module, "PROGRESS_SECONDS", 0.0)
    steps: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    real_step = train_module.training_step

    def recorded(model: nn.Module, optimizer: object, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 amp: object, soft: torch.Tensor | None = None, lam: float = 1.0) -> object:
        steps.append((x.clone(), soft))
        return real_step(model, optimizer, loss_fn, x, y, amp, soft, lam)

    monkeypatch.setattr(train_module, "training_step", recorded)
    cfg = TrainConfig.from_dict(dict(data="synthetic:700", arch="basic", epochs=2, batch_size=32, threads=1,
                                     amp="off", teachers=["teacher.pt"], teaching="live", augment={"mixup": 0.4}))
    run_training(cfg, tmp_path / "straight")
    run_dir = tmp_path / "resumed"

    def stop_in_epoch_2(record: dict) -> None:
        if record["type"] == "progress" and (record["epoch"], record["step"]) == (2, 3):
            RunDir(run_dir).request_stop()

    run_training(cfg, run_dir, on_progress=stop_in_epoch_2)
    resume_training(run_dir)
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["state_dict"]
    resumed = torch.load(run_dir / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    assert not (run_dir / train_module.TEACHER_TARGETS).exists()
    student = torch.load(run_dir / "last.pt", weights_only=True)["preprocessing"]
    scale, shift = student["std"] / teacher.std, (student["mean"] - teacher.mean) / teacher.std
    for x, soft in steps:  # what the teacher says of each batch, in its own normalisation
        assert soft is not None and torch.allclose(soft, _SaysHappyWhenBright()(x * scale + shift).softmax(1))
    assert {int(a) for _, soft in steps for a in soft.argmax(1)} == {EMOTIONS.index("happy"), EMOTIONS.index("sad")}
    assert RunDir(run_dir).config()["teaching"] == "live"


def test_teaching_is_checked() -> None:
    with pytest.raises(UserError, match="teaching must be one of fixed, live"):
        TrainConfig(teaching="sometimes").validate()


def test_fixed_targets_of_a_mixed_batch_are_mixed_as_its_faces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def one_hot(labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(labels, len(EMOTIONS)).float()

    train_labels = torch.from_numpy(load_data("synthetic:700").split("train", EMOTIONS, 0.1, 0).labels)
    monkeypatch.setattr(train_module, "teacher_probabilities",  # each face's target: its own label, one-hot
                        lambda *_args: one_hot(train_labels))
    steps: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    real_step = train_module.training_step

    def recorded(model: nn.Module, optimizer: object, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 amp: object, soft: torch.Tensor | None = None, lam: float = 1.0) -> object:
        steps.append((y, soft, lam))
        return real_step(model, optimizer, loss_fn, x, y, amp, soft, lam)

    monkeypatch.setattr(train_module, "training_step", recorded)
    run_training(TrainConfig.from_dict(dict(data="synthetic:700", arch="basic", epochs=1, batch_size=32, threads=1,
                                            amp="off", teachers=["t.pt"], augment={"mixup": 0.4})), tmp_path / "r")
    assert any(lam < 0.99 for _, _, lam in steps)
    for y, soft, lam in steps:
        assert torch.allclose(soft, one_hot(y) * lam + one_hot(y.flip(0)) * (1 - lam))
