"""Which faces a model learned: digests in its checkpoint, the checks they make exact, and evaluation notes."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fercore import leakage
from fercore.augment import AugmentConfig
from fercore.card import ship
from fercore.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from fercore.config import TrainConfig
from fercore.data import load_data
from fercore.errors import UserError
from fercore.evaluate import evaluate
from fercore.leakage import Holdout
from fercore.runs import RunDir
from fercore.train import resume_training, run_training
from tests.conftest import write_image_tree

FACES = np.random.default_rng(0).integers(0, 256, (12, 48, 48), dtype=np.uint8)
CARVE = {"fraction": 0.1, "seed": 0}


def _cfg(data: Path | str, **overrides: object) -> TrainConfig:
    return TrainConfig(**{"data": str(data), "arch": "basic", "epochs": 1, "batch_size": 16, "threads": 1,
                          "amp": "off", "augment": AugmentConfig.off(), **overrides})


def test_equal_pixels_give_equal_digests_and_one_changed_pixel_another() -> None:
    changed = FACES[:2].copy()
    changed[1, 20, 30] ^= 1
    digests = leakage.digests(np.concatenate([FACES[:2], changed]))
    assert digests.dtype == np.int64 and len(set(digests.tolist())) == 3
    assert digests[0] == digests[2] and digests[1] != digests[3]
    stored = leakage.stored_form(np.concatenate([digests, digests]))
    assert stored.tolist() == sorted(set(digests.tolist()))
    assert leakage.learned_digests({leakage.DIGESTS: stored}).tolist() == stored.tolist()
    assert leakage.learned_digests({}) is None


def test_a_holdout_counts_only_the_validation_faces_its_own_training_lacks() -> None:
    """FER2013's train split repeats faces: a model that learned a validation face the run also trains on
    knows nothing the run will not."""
    val, own_train = FACES[:4], np.concatenate([FACES[3:4], FACES[8:]])  # val face 3 is also a training face
    holdout = Holdout(val, leakage.digests(own_train), "fp", CARVE, carved=True)
    assert holdout.val_count == 4 and len(holdout.leakable) == 3
    holdout.check("model", {}, np.unique(leakage.digests(FACES[3:])), strict=True)  # of val, only the repeat
    with pytest.raises(UserError, match="model learned 1 of this run's 4 validation faces"):
        holdout.check("model", {}, np.unique(leakage.digests(FACES[2:])), strict=True)
    val = np.random.default_rng(1).integers(0, 256, (400, 48, 48), dtype=np.uint8)
    big = Holdout(val, leakage.digests(FACES), "fp", CARVE, carved=True)
    big.check("model", {}, np.unique(big.leakable[:2]), strict=True)  # 2 of 400: the 0.5% tolerated
    with pytest.raises(UserError, match="learned 3 of this run's 400 validation faces: .*never saw them$"):
        big.check("model", {}, np.unique(big.leakable[:3]), strict=True)


def test_checkpoints_without_digests_are_judged_by_fingerprint_and_carve() -> None:
    carved = Holdout(FACES[:2], leakage.digests(FACES[2:]), "fp", CARVE, carved=True)
    same = {"data_fingerprint": "fp", "val_split": CARVE}
    carved.check("old", same, None, strict=True)
    with pytest.raises(UserError, match="old learned these faces with another validation carve.*--val-fraction 0.2"):
        carved.check("old", {**same, "val_split": {"fraction": 0.2, "seed": 0}}, None, strict=False)
    other_data = {"data_fingerprint": "other", "val_split": CARVE}
    carved.check("old", other_data, None, strict=False)  # --init from other data: allowed
    with pytest.raises(UserError, match="old was not trained on this data"):
        carved.check("old", other_data, None, strict=True)  # a teacher: it may hold these faces in another format
    own_val = Holdout(FACES[:2], leakage.digests(FACES[2:]), "fp", CARVE, carved=False)
    own_val.check("old", {**same, "val_split": {"fraction": 0.2, "seed": 0}}, None, strict=True)  # no carve in use


def test_init_from_a_model_of_fewer_faces_is_refused_once_new_faces_reshuffle_the_carve(tmp_path: Path) -> None:
    """Faces added to the folder change its fingerprint and its validation carve: the fingerprint check let the
    model that had learned some of the new validation faces through; the digests catch it."""
    first = write_image_tree(tmp_path / "faces", per_class=10, splits=("train",))
    run_training(_cfg(first), tmp_path / "first")
    more = shutil.copytree(first, tmp_path / "more")
    extra = write_image_tree(tmp_path / "extra", per_class=10, splits=("train",), seed=5)
    for i, path in enumerate(sorted(extra.rglob("*.jpg"))):
        shutil.copy(path, more / path.relative_to(extra).parent / f"extra-{i}.jpg")
    with pytest.raises(UserError, match=f"--init {tmp_path / 'first' / 'best.pt'} learned [0-9]+ of this run's 14 "
                                        "validation faces"):
        run_training(_cfg(more, init_from=str(tmp_path / "first" / "best.pt")), tmp_path / "second")
    assert not (tmp_path / "second" / "last.pt").exists()


def test_every_checkpoint_of_a_run_keeps_its_training_faces(tiny_checkpoint: Path) -> None:
    train = load_data("synthetic:2100").split("train", seed=0).images
    kept = leakage.learned_digests(read_checkpoint(tiny_checkpoint))
    assert kept is not None and kept.tolist() == np.unique(leakage.digests(train)).tolist()
    assert leakage.DIGESTS not in load_model(tiny_checkpoint).info  # the card stays small
    assert leakage.DIGESTS in read_checkpoint(tiny_checkpoint.parent / "last.pt")


def test_evaluation_says_how_many_faces_the_model_trained_on(tiny_checkpoint: Path) -> None:
    on_train = evaluate(tiny_checkpoint, "synthetic:2100", "train", tta=False)
    assert on_train.seen_in_training == len(on_train.labels) > 0
    n = len(on_train.labels)
    assert on_train.seen_note() == (f"{n:,} of these {n:,} faces (100.0%) are, pixel for pixel, faces the model "
                                    "trained on: accuracy here overstates it")
    assert on_train.to_json()["seen_in_training"] == n and on_train.to_json()["accuracy_unseen"] is None
    on_test = evaluate(tiny_checkpoint, "synthetic:2100", "test", tta=False)
    assert on_test.seen_in_training == 0 and on_test.seen_note() == ""
    assert on_test.unseen_accuracy == on_test.accuracy == on_test.to_json()["accuracy_unseen"]
    on_all = evaluate(tiny_checkpoint, "synthetic:2100", "all", tta=False)  # train, val and test faces
    unseen = ~on_all.seen
    assert on_all.seen_in_training == n and unseen.sum() == len(on_all.labels) - n > 0
    expected = np.mean(on_all.predictions[unseen] == on_all.labels[unseen])
    assert on_all.unseen_accuracy == pytest.approx(expected)
    assert on_all.seen_note().endswith(f"its accuracy on the other {unseen.sum():,} is {expected:.1%}")
    others = on_all.without_seen()
    assert len(others.labels) == len(others.faces) == unseen.sum() and others.accuracy == pytest.approx(expected)
    assert others.confusion().sum() == unseen.sum() and others.seen_note() == "" and others.seen_in_training == 0
    assert np.array_equal(others.faces.images, on_all.faces.images[unseen])
    assert on_test.without_seen() is on_test


def test_shipping_an_older_checkpoint_adds_its_digests(tiny_checkpoint: Path, tmp_path: Path) -> None:
    older = read_checkpoint(tiny_checkpoint)
    del older[leakage.DIGESTS]
    save_checkpoint(tmp_path / "older.pt", older)
    assert load_model(tmp_path / "older.pt").learned is None
    ship(tmp_path / "older.pt", "synthetic:2100", tmp_path / "shipped" / "model.pt")
    shipped = read_checkpoint(tmp_path / "shipped" / "model.pt")
    assert torch.equal(shipped[leakage.DIGESTS], read_checkpoint(tiny_checkpoint)[leakage.DIGESTS])


def test_digests_take_uint8_faces_only_and_none_at_all() -> None:
    assert leakage.digests(FACES[:0]).shape == (0,)
    with pytest.raises(TypeError, match="uint8"):
        leakage.digests(FACES.astype(np.float32))


def test_a_checkpoint_with_damaged_digests_is_refused_in_one_line(tiny_checkpoint: Path, tmp_path: Path) -> None:
    damaged = read_checkpoint(tiny_checkpoint)
    damaged[leakage.DIGESTS] = damaged[leakage.DIGESTS].float()
    save_checkpoint(tmp_path / "damaged.pt", damaged)
    with pytest.raises(CheckpointError, match=f"damaged fercore checkpoint: {leakage.DIGESTS} missing or malformed"):
        load_model(tmp_path / "damaged.pt")


def test_a_warm_started_run_keeps_the_faces_its_start_had_learned(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A model of synthetic:2100 continued on other faces still knows the first ones: its checkpoints say so,
    after a resume too, so that evaluation and later runs see them."""
    run_dir = tmp_path / "continued"
    stopped = run_training(_cfg("synthetic:700", epochs=2, init_from=str(tiny_checkpoint)), run_dir,
                           on_progress=lambda record: record["type"] == "epoch" and RunDir(run_dir).request_stop())
    assert stopped["stopped"]
    resume_training(run_dir)
    first = leakage.learned_digests(read_checkpoint(tiny_checkpoint))
    own = leakage.digests(load_data("synthetic:700").split("train", seed=0).images)
    for name in ("last.pt", "best.pt"):
        assert leakage.learned_digests(read_checkpoint(run_dir / name)).tolist() == np.union1d(first, own).tolist()
    assert evaluate(run_dir, "synthetic:2100", "train", tta=False).unseen_accuracy is None  # all known


@pytest.mark.parametrize("teaching", ["fixed", "live"])
def test_a_distilled_run_keeps_the_faces_its_teachers_had_learned(tiny_checkpoint: Path, tmp_path: Path,
                                                                   teaching: str) -> None:
    """A teacher's predictions carry what it learned into the student: the student's checkpoints say so."""
    run_dir = tmp_path / "taught"
    run_training(_cfg("synthetic:700", teachers=[str(tiny_checkpoint)], teaching=teaching), run_dir)
    first = leakage.learned_digests(read_checkpoint(tiny_checkpoint))
    own = leakage.digests(load_data("synthetic:700").split("train", seed=0).images)
    for name in ("last.pt", "best.pt"):
        assert leakage.learned_digests(read_checkpoint(run_dir / name)).tolist() == np.union1d(first, own).tolist()


def test_the_best_checkpoint_of_a_run_resumed_across_versions_gains_digests(tmp_path: Path) -> None:
    """best.pt saved by a fercore without digests, and never beaten after the resume, gets them when the run ends."""
    run_dir = tmp_path / "run"
    run_training(_cfg("synthetic:700", epochs=2), run_dir,
                 on_progress=lambda record: record["type"] == "epoch" and RunDir(run_dir).request_stop())
    older = read_checkpoint(run_dir / "best.pt")
    del older[leakage.DIGESTS]
    save_checkpoint(run_dir / "best.pt", older)
    last = read_checkpoint(run_dir / "last.pt")
    last["train_state"]["position"]["best_val_acc"] = 1.01  # no later epoch replaces best.pt
    save_checkpoint(run_dir / "last.pt", last)
    resume_training(run_dir)
    best = read_checkpoint(run_dir / "best.pt")
    assert best["metrics"] == older["metrics"] and leakage.DIGESTS in best


def test_the_repeats_note_counts_copies_mixed_labels_and_blank_faces() -> None:
    blank = np.full((48, 48), 7, dtype=np.uint8)
    images = np.stack([FACES[0], FACES[1], FACES[0], FACES[1], FACES[1], blank, blank, FACES[2]])
    labels = np.array([3, 2, 3, 2, 5, 0, 0, 1])  # FACES[1]'s copies disagree; FACES[0]'s and the blanks' agree
    assert leakage.repeats_note(images, labels) == ("4 of 8 faces copy another pixel for pixel (1 group(s) of copies "
                                                    "carry different labels); 2 face(s) are blank (one grey level)")
    assert leakage.repeats_note(images[[0, 1, 7]], labels[[0, 1, 7]]) == ""
    assert leakage.repeats_note(images[[0, 2]], labels[[0, 2]]) == "1 of 2 faces copy another pixel for pixel"
