"""The training loop: one run directory, events out, clean stop and exact resume.

Randomness is a pure function of (seed, epoch, step): the epoch's shuffle, each step's augmentation and
dropout are seeded from those numbers, so a run resumed from last.pt ends exactly where an uninterrupted
run would.
"""
from __future__ import annotations

import _thread
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fercore import hardware, leakage, models
from fercore.atomic import atomic_write
from fercore.augment import augment_batch, mix_batch
from fercore.checkpoint import make_checkpoint, read_checkpoint, save_checkpoint, with_calibration
from fercore.config import TrainConfig
from fercore.data import load_data
from fercore.data.splits import carves_validation, epoch_steps
from fercore.distill import DistillationLoss, LiveTeachers, load_teachers, teacher_probabilities
from fercore.errors import SHOWN_AS_ONE_LINE, UserError
from fercore.inference import Progress, predict_proba, to_input
from fercore.metrics import confusion_matrix, macro_f1
from fercore.runs import BEST, CONFIG, LAST, METRICS, RunDir, process_token
from fercore.swa import WeightAverage

PROGRESS_SECONDS = 1.0
TEACHER_TARGETS = "teacher_targets.pt"

ProgressCallback = Callable[[dict[str, Any]], None]


class StopRequested(Exception):
    """Raised inside the loop when a stop was asked for; the position is saved first."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def _step_seed(seed: int, epoch: int, step: int) -> int:
    return (seed * 1_000_003 + epoch * 100_003 + step) % (2**63)


def _describe(arch: str, arch_args: dict[str, Any], classes: Sequence[str]) -> str:
    """'a fernet (widths 48-96-192-384) for angry, ...': what --init compares."""
    options = models.options_text(arch_args)
    return f"a {arch}{f' ({options})' if options else ''} for {', '.join(classes)}"


def _pixel_mean_std(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of uint8 pixels scaled to 0..1, from a histogram (no float copy of the data set).

    torch.bincount counts uint8 in place; numpy's would first copy the pixels to int64 (0.5 s for FER2013)."""
    counts = torch.bincount(torch.from_numpy(images.reshape(-1)), minlength=256).double().numpy()
    values = np.arange(256) / 255
    mean = float((counts * values).sum() / counts.sum())
    std = float(np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum()))
    return mean, std or 1.0


def _class_weights(counts: np.ndarray, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    if mode == "sqrt":
        weights = np.sqrt(weights)
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.dim() <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)


WARMUP_SHARE = 0.2  # of a one-cycle schedule's steps, spent rising to the peak learning rate


def _scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":  # torch divides by zero when the warm-up is exactly one step: make it two
        warmup = WARMUP_SHARE if WARMUP_SHARE * total != 1 else 2 / total
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=warmup)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    if cfg.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.01 ** (1 / max(1, cfg.epochs)))
    return None


PER_STEP_SCHEDULES = ("onecycle", "cosine")


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, x: torch.Tensor,
                  y: torch.Tensor, amp: torch.dtype | None, soft: torch.Tensor | None = None,
                  lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One update on a prepared batch (soft: the teachers' probabilities for the batch as given, mixed faces
    included, for a DistillationLoss; lam < 1: a batch mixed by mix_batch, whose labels are lam x its own and
    1 - lam x the reversed batch's); returns the (detached) loss and logits, with no host sync."""
    with hardware.autocast(x.device, amp):
        logits = model(x).float()

        def loss_against(labels: torch.Tensor, probabilities: torch.Tensor | None) -> torch.Tensor:
            return loss_fn(logits, labels) if probabilities is None else loss_fn(logits, labels, probabilities)

        loss = loss_against(y, soft)
        if lam < 1:
            loss = loss * lam + loss_against(y.flip(0), soft) * (1 - lam)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def measure_step_seconds(cfg: TrainConfig, num_classes: int, threads: int, repeats: int = 3,
                         teachers: Sequence[tuple[str, dict[str, Any]]] = ()) -> float:
    """Seconds of one training step of cfg's model and batch on this machine (random faces, augmented), with the
    forward pass of live teachers of these (architecture, arch_args): the fastest of repeats after two warm-up
    steps (kernels, allocations), as a busy moment only ever slows one.
    One measurement at a time: torch's thread count is the whole process's (the app's sessions share it)."""
    with _MEASURING:
        return _timed_step(cfg, num_classes, threads, repeats, teachers)


_MEASURING = threading.Lock()


def _timed_step(cfg: TrainConfig, num_classes: int, threads: int, repeats: int,
                teachers: Sequence[tuple[str, dict[str, Any]]]) -> float:
    previous = torch.get_num_threads()
    hardware.configure_threads(threads)
    try:
        device = hardware.pick_device(cfg.device)
        amp = hardware.amp_dtype(device, cfg.amp)
        model = models.build(cfg.arch, num_classes, **cfg.arch_args).to(device, memory_format=torch.channels_last)
        nets = [models.build(arch, num_classes, **args).to(device, memory_format=torch.channels_last).eval()
                for arch, args in teachers]
        optimizer, loss_fn = _optimizer(cfg, model), nn.CrossEntropyLoss()
        gen = torch.Generator(device=device).manual_seed(0)
        faces = torch.rand(cfg.batch_size, 1, 48, 48, device=device, generator=gen)
        labels = torch.randint(0, num_classes, (cfg.batch_size,), device=device, generator=gen)
        times = []
        for _ in range(repeats + 2):
            start = time.perf_counter()
            x = to_input(augment_batch(faces, cfg.augment, gen), 0.5, 0.25)
            with torch.no_grad(), hardware.autocast(device, amp):
                for net in nets:
                    net(x)
            float(training_step(model, optimizer, loss_fn, x, labels, amp)[0])
            times.append(time.perf_counter() - start)
        return min(times[2:])
    finally:
        torch.set_num_threads(previous)


@dataclass
class Position:
    """Where the run is: the next epoch and step to do, and the running sums of the current epoch."""

    epoch: int = 0  # 0-based epoch in progress
    step: int = 0  # next step within it
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    epoch_seconds: float = 0.0
    best_val_acc: float = -1.0
    best_epoch: int = 0

    @property
    def best(self) -> float | None:
        """The best validation accuracy so far, None before the first epoch's."""
        return self.best_val_acc if self.best_epoch else None


class _StopFlag:
    """Set by SIGTERM/SIGINT or by the run's STOP file."""

    def __init__(self, run: RunDir):
        self.run = run
        self.signalled = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.signalled = True

    def __bool__(self) -> bool:
        return self.signalled or self.run.stop_requested()


class _StartupWatch:
    """While a run starts (data loading, the teachers' pass: minutes for FER2013), its STOP file interrupts the
    main thread as Ctrl-C would: the run ends at once with nothing saved, its directory reusable."""

    def __init__(self, run: RunDir):
        self.run, self.done = run, threading.Event()

    def __enter__(self) -> _StartupWatch:
        if threading.current_thread() is threading.main_thread():
            threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()

    def _watch(self) -> None:
        while not self.done.wait(0.2):
            if self.run.stop_requested() and not self.done.is_set():
                _thread.interrupt_main()
                return


class Trainer:
    """Owns the model, optimiser and data of one run; `fit` runs it to the end or to a stop."""

    def __init__(self, cfg: TrainConfig, run: RunDir, on_progress: ProgressCallback | None = None,
                 resume: bool = False):
        """resume: continue from the run's last.pt (then the --init checkpoint is not read: it may be gone)."""
        cfg.validate()
        self.cfg, self.run, self.on_progress = cfg, run, on_progress
        self.threads = hardware.configure_threads(cfg.threads)
        torch.set_flush_denormal(True)
        self.device = hardware.pick_device(cfg.device)
        self.amp = hardware.amp_dtype(self.device, cfg.amp)
        self.classes = tuple(cfg.classes)
        data = load_data(cfg.data)
        if note := data.raw.report.summary():  # what the reader skipped, for the user to see (not logged)
            self._report({"type": "data", "note": note}, log=False)
        self.fingerprint = data.fingerprint
        resumed = read_checkpoint(self.run.file(LAST)) if resume else None
        if resumed is not None and resumed.get("data_fingerprint") != self.fingerprint:  # before any teacher's pass
            raise UserError(f"the data of {cfg.data} changed since this run started: cannot resume")
        self.train_set = data.split("train", self.classes, cfg.val_fraction, cfg.split_seed)
        self.val_set = data.split("val", self.classes, cfg.val_fraction, cfg.split_seed)
        train_digests = leakage.digests(self.train_set.images)
        self.learned = leakage.stored_form(train_digests)  # kept in every checkpoint the run saves
        self.holdout = leakage.Holdout(self.val_set.images, train_digests, data.fingerprint, cfg.val_split(),
                                       carved=carves_validation(data.splits_present()))
        self.mean, self.std = _pixel_mean_std(self.train_set.images)
        self.images = torch.from_numpy(self.train_set.images).to(self.device)
        self.labels = torch.from_numpy(self.train_set.labels).to(self.device)
        self.steps_per_epoch, self.batch_size = epoch_steps(len(self.train_set), cfg.batch_size)
        torch.manual_seed(cfg.seed)
        self.model = models.build(cfg.arch, len(self.classes), **cfg.arch_args).to(
            self.device, memory_format=torch.channels_last)
        if cfg.init_from and not resume:
            self._init_weights(Path(cfg.init_from))
        self.optimizer = _optimizer(cfg, self.model)
        self.scheduler = _scheduler(cfg, self.optimizer, self.steps_per_epoch)
        weights = _class_weights(np.bincount(self.train_set.labels, minlength=len(self.classes)), cfg.class_weights)
        self.loss_fn: nn.Module = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(self.device),
                                                      label_smoothing=cfg.label_smoothing)
        self.soft_targets: torch.Tensor | None = None  # the fixed teaching's: one row per training face
        self.live_teachers: LiveTeachers | None = None
        if cfg.teachers:
            self.loss_fn = DistillationLoss(self.loss_fn, cfg.distill)
            if cfg.teaching == "live":
                self.live_teachers = LiveTeachers(load_teachers(cfg.teachers, self.classes, self.holdout,
                                                                self.device, precision="float"), self.amp)
            else:
                self.soft_targets = self._teacher_targets(resume).to(self.device)
        for learned in self.holdout.inherited:  # what the --init model and the teachers learned passes to this one
            self._learned_also(learned)
        self.aug_gen = torch.Generator(device=self.device)
        self.average = WeightAverage() if cfg.swa_epochs else None
        self.pos = Position()
        self.epoch_seconds: list[float] = []  # of the completed epochs, validation and saving included, for the ETA
        if resumed is not None:
            self._restore(resumed)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, with_state: bool, metrics: dict[str, Any], model: nn.Module | None = None) -> dict[str, Any]:
        """The run's checkpoint of model (the trained one unless given), with the optimiser state if with_state."""
        model = self.model if model is None else model
        extra: dict[str, Any] = {
            "metrics": metrics, "data_fingerprint": self.fingerprint, "data_source": self.cfg.data,
            "config": self.cfg.to_dict(), "parameters": models.parameter_count(model),
            "val_split": self.cfg.val_split(), leakage.DIGESTS: self.learned,
            "trained_on": {"device": str(self.device), "processor": hardware.device_name(self.device),
                           "threads": self.threads,
                           "amp": str(self.amp).replace("torch.", "") if self.amp else "float32"},
        }
        if with_state:
            extra["train_state"] = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else {},
                "position": dict(self.pos.__dict__),
            }
            if self.average is not None:
                extra["train_state"]["weight_average"] = self.average.state_dict()
        return make_checkpoint(model, self.cfg.arch, self.cfg.arch_args, self.classes, self.mean, self.std,
                               self.cfg.tta, **extra)

    def _save_last(self) -> None:
        epochs = self.run.epochs()
        last = epochs[-1] if epochs else {}
        if "trained" in last:  # last.pt holds the trained weights, not their average: its metrics are theirs
            last = {**{k: v for k, v in last.items() if k not in ("trained", "averaged_epochs")}, **last["trained"]}
        save_checkpoint(self.run.file(LAST), self._checkpoint(True, last))

    def _init_weights(self, path: Path) -> None:
        """Warm start: weights and normalisation of another run's checkpoint; optimiser and schedule start fresh."""
        data = read_checkpoint(path)
        if (data["arch"], data.get("arch_args", {}), tuple(data["classes"])) != (
                self.cfg.arch, self.cfg.arch_args, self.classes):
            raise UserError(f"--init {path} is {_describe(data['arch'], data.get('arch_args', {}), data['classes'])}; "
                            f"this run is {_describe(self.cfg.arch, self.cfg.arch_args, self.classes)}: they must "
                            "match")
        self.holdout.check(f"--init {path}", data, leakage.learned_digests(data), strict=False)
        self.model.load_state_dict(data["state_dict"])
        self.mean, self.std = data["preprocessing"]["mean"], data["preprocessing"]["std"]

    def _learned_also(self, learned: np.ndarray | None) -> None:
        """Add faces a model this run continues or learns from had learned to the digests its checkpoints keep."""
        if learned is not None:
            self.learned = torch.from_numpy(np.union1d(self.learned.numpy(), learned))

    def _teacher_targets(self, resume: bool) -> torch.Tensor:
        """The teachers' averaged probabilities for the training faces: computed when the run starts and kept in
        the run directory, so a resumed run learns from the very same targets (and skips the teachers' pass).
        A new run always computes them: a file left by an earlier attempt may be other teachers'."""
        path = self.run.file(TEACHER_TARGETS)
        expected = (len(self.train_set.labels), len(self.classes))
        if resume and path.exists():
            try:
                kept = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # damaged in any way (truncated, not a tensor file): made again below
                kept = None
            if isinstance(kept, torch.Tensor) and tuple(kept.shape) == expected:
                return kept
        targets = teacher_probabilities(self.cfg.teachers, self.train_set.images, self.classes, self.holdout,
                                        self.device, self._startup_progress("teachers"))
        atomic_write(path, lambda handle: torch.save(targets, handle))
        self.run.write_status(startup=None)
        return targets

    def _startup_progress(self, phase: str) -> Progress:
        """A Progress for a long step of the start (the teachers' pass: minutes for FER2013) that tells status.json
        (as `startup`: phase, done, total, eta_s) and on_progress (a "startup" record) at most once a
        PROGRESS_SECONDS, and at the end. The ETA is None until a rate is known: it is measured from the first
        call on, as the first pass includes the warm-up (it made a 9-minute pass look like 68 minutes)."""
        last = time.monotonic()
        since, done_then = None, 0  # the time and faces done of the first call

        def report(done: int, total: int) -> None:
            nonlocal last, since, done_then
            now = time.monotonic()
            if since is None:
                since, done_then = now, done
            if now - last < PROGRESS_SECONDS and done < total:
                return
            last = now
            eta = (now - since) / (done - done_then) * (total - done) if done > done_then else None
            where = {"phase": phase, "done": done, "total": total, "eta_s": eta}
            self.run.write_status(startup=where)
            self._report({"type": "startup", **where}, log=False)
        return report

    def calibrate_best(self) -> None:
        """Store int8 calibration in best.pt, once the run ends (see fercore.quantize); seconds on a CPU.

        A failure here leaves best.pt as it was (it then runs in float) and the run's outcome unchanged."""
        path = self.run.file(BEST)
        if not path.exists():
            return
        try:
            data = read_checkpoint(path)
            calibrated = with_calibration(data, self.train_set.images, self.cfg.seed)
            if leakage.DIGESTS not in calibrated:  # a best.pt saved before a resume, by a fercore without them
                calibrated = {**calibrated, leakage.DIGESTS: self.learned}
            if calibrated is not data:
                save_checkpoint(path, calibrated)
        except Exception as exc:  # best.pt stays a good float checkpoint
            print(f"warning: int8 calibration skipped: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _restore(self, data: dict[str, Any]) -> None:
        """Continue from the run's last.pt (data): weights, optimiser, schedule and position."""
        self.model.load_state_dict(data["state_dict"])
        self._learned_also(leakage.learned_digests(data))  # --init's, which is not read again
        state = data["train_state"]
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.pos = Position(**state["position"])
        if self.average is not None and "weight_average" in state:
            self.average.load_state_dict(state["weight_average"], self.device)
        self.epoch_seconds = [e["seconds"] for e in self.run.epochs() if e["epoch"] <= self.pos.epoch]
        self.mean, self.std = data["preprocessing"]["mean"], data["preprocessing"]["std"]

    # ------------------------------------------------------------------ the loop
    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _report(self, record: dict[str, Any], log: bool = True) -> None:
        if log:
            self.run.log(record)
        if self.on_progress:
            self.on_progress(record)

    def _train_epoch(self, stop: _StopFlag) -> None:
        cfg, pos, epoch = self.cfg, self.pos, self.pos.epoch
        order = self._shuffled(_step_seed(cfg.seed, epoch, -1))
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        started, last_report, seen_here = time.monotonic(), time.monotonic(), 0
        base_seconds = pos.epoch_seconds
        for step in range(pos.step, self.steps_per_epoch):
            if stop:
                self._fold(loss_sum, correct, seen_here, base_seconds + time.monotonic() - started)
                raise StopRequested
            seed = _step_seed(cfg.seed, epoch, step)
            self.aug_gen.manual_seed(seed)
            torch.manual_seed(seed)
            idx = self._step_faces(order, step)
            y = self.labels[idx]
            x, lam = mix_batch(self._batch(idx), cfg.augment, random.Random(seed))
            soft = self._soft_targets(idx, x, lam)
            loss, logits = training_step(self.model, self.optimizer, self.loss_fn, x, y, self.amp, soft, lam)
            last_step = epoch == cfg.epochs - 1 and step == self.steps_per_epoch - 1
            if self.scheduler is not None and cfg.schedule in PER_STEP_SCHEDULES and not last_step:
                self.scheduler.step()  # not past the last step: the lr reported at the end is the one it used
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == (y if lam >= 0.5 else y.flip(0))).sum()  # a mixed face: its main label
            seen_here += len(y)
            pos.step = step + 1
            now = time.monotonic()
            if now - last_report >= PROGRESS_SECONDS or pos.step == self.steps_per_epoch:
                last_report = now
                self._fold(loss_sum, correct, seen_here, base_seconds + now - started)
                loss_sum.zero_()
                correct.zero_()
                seen_here = 0
                base_seconds, started = pos.epoch_seconds, now
                speed = pos.seen / max(1e-9, pos.epoch_seconds)
                self._report({"type": "progress", "epoch": epoch + 1, "step": pos.step,
                              "steps": self.steps_per_epoch, "train_loss": pos.loss_sum / max(1, pos.seen),
                              "train_acc": pos.correct / max(1, pos.seen), "lr": self._lr(),
                              "images_per_s": speed, "time": time.time()})
                self._write_running_status(speed)

    def _shuffled(self, seed: int) -> torch.Tensor:
        """The training faces' indices in the order seed draws, on the training device."""
        return torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(seed)).to(self.device)

    def _step_faces(self, order: torch.Tensor, step: int) -> torch.Tensor:
        """The indices of step's full batch in order."""
        return order[step * self.batch_size:(step + 1) * self.batch_size]

    def _batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The augmented, normalised model input for the faces at idx."""
        x = augment_batch(self.images[idx].unsqueeze(1).float() / 255, self.cfg.augment, self.aug_gen)
        return to_input(x, self.mean, self.std)

    def _soft_targets(self, idx: torch.Tensor, x: torch.Tensor, lam: float) -> torch.Tensor | None:
        """The teachers' probabilities for the batch x of the faces at idx (mixed by lam): the live teachers' on x
        itself, or the fixed targets of its faces mixed as the faces were; None without teachers."""
        if self.live_teachers is not None:
            return self.live_teachers(x, self.mean, self.std)
        if self.soft_targets is None:
            return None
        soft = self.soft_targets[idx]
        return soft if lam >= 1 else soft * lam + soft.flip(0) * (1 - lam)

    def _fold(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, epoch_seconds: float) -> None:
        """Move the device-side running sums into the position (one host sync per report, not per step)."""
        loss_value = float(loss_sum)
        if not math.isfinite(loss_value):
            raise self._diverged("loss", loss_value)
        self.pos.loss_sum += loss_value
        self.pos.correct += int(correct)
        self.pos.seen += seen
        self.pos.epoch_seconds = epoch_seconds

    def _diverged(self, what: str, value: float) -> TrainingDiverged:
        kept = "; last.pt keeps the last good epoch" if self.run.file(LAST).exists() else ""
        return TrainingDiverged(f"the {what} became {value} in epoch {self.pos.epoch + 1}: lower the learning "
                                f"rate{kept}")

    def _validate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        probs = predict_proba(model, self.val_set.images, self.mean, self.std, amp=self.amp is not None)
        labels = torch.from_numpy(self.val_set.labels)
        pred = probs.argmax(1)
        nll = F.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
        return {"val_loss": nll, "val_acc": float((pred == labels).float().mean()),
                "val_macro_f1": macro_f1(confusion_matrix(labels.numpy(), pred.numpy(), len(self.classes)))}

    def _write_running_status(self, images_per_s: float) -> None:
        """status.json while training: where the run is, its ETA, and images_per_s (the latest measured speed)."""
        pos, cfg = self.pos, self.cfg
        done = pos.epoch + pos.step / self.steps_per_epoch
        per_epoch = (np.median(self.epoch_seconds) if self.epoch_seconds
                     else pos.epoch_seconds / max(pos.step, 1) * self.steps_per_epoch)
        self.run.write_status(state="running", pid=os.getpid(), epoch=pos.epoch + 1, total_epochs=cfg.epochs,
                              step=pos.step, steps=self.steps_per_epoch, images_per_s=images_per_s,
                              eta_s=float(per_epoch * (cfg.epochs - done)),
                              best_val_acc=pos.best)

    def _epoch_model(self) -> nn.Module:
        """The model this epoch stands for: the trained one, or in the weight-averaging epochs (swa_epochs) the
        average of the weights at the end of each of them so far, its batch-norm statistics measured anew.

        Measured on augmented training faces: on the shipped model (float, no TTA), statistics measured anew over
        the plain faces cost 3.45 points of validation accuracy (70.51% -> 67.06%), over augmented ones 0.28."""
        if self.average is None or self.pos.epoch < self.cfg.epochs - self.cfg.swa_epochs:
            return self.model
        self.average.add(self.model)
        seed = _step_seed(self.cfg.seed, self.pos.epoch, -2)
        self.aug_gen.manual_seed(seed)
        torch.manual_seed(seed)
        order = self._shuffled(seed)
        with hardware.autocast(self.device, self.amp):  # the inputs training saw: shuffled, augmented, full batches
            return self.average.averaged_model(self.model, (
                self._batch(self._step_faces(order, step)) for step in range(self.steps_per_epoch)))

    def fit(self) -> dict[str, Any]:
        """Train to the last epoch (or early stop); returns the best epoch's metrics."""
        cfg, pos = self.cfg, self.pos
        with _StopFlag(self.run) as stop:
            while pos.epoch < cfg.epochs and not self._early_stopped():
                self._train_epoch(stop)
                trained_at = time.monotonic()  # validation, averaging and saving follow: the ETA counts them
                model = self._epoch_model()
                val = self._validate(model)
                if not math.isfinite(val["val_loss"]):
                    raise self._diverged("validation loss", val["val_loss"])
                record = {"type": "epoch", "epoch": pos.epoch + 1,
                          "train_loss": pos.loss_sum / max(1, pos.seen), "train_acc": pos.correct / max(1, pos.seen),
                          **val, "lr": self._lr(), "seconds": pos.epoch_seconds,
                          "images_per_s": pos.seen / max(1e-9, pos.epoch_seconds), "time": time.time()}
                if model is not self.model:  # an averaging epoch: the trained weights (last.pt's) are validated too
                    record |= {"averaged_epochs": self.average.count, "trained": self._validate(self.model)}
                if self.scheduler is not None and cfg.schedule == "plateau":
                    self.scheduler.step(val["val_acc"])
                elif self.scheduler is not None and cfg.schedule == "exponential":
                    self.scheduler.step()
                improved = val["val_acc"] > pos.best_val_acc
                if improved:
                    pos.best_val_acc, pos.best_epoch = val["val_acc"], pos.epoch + 1
                    save_checkpoint(self.run.file(BEST), self._checkpoint(False, record, model))
                self._report(record)
                self.pos = pos = Position(epoch=pos.epoch + 1, best_val_acc=pos.best_val_acc,
                                          best_epoch=pos.best_epoch)
                self._save_last()
                self.epoch_seconds.append(record["seconds"] + time.monotonic() - trained_at)
                self._write_running_status(record["images_per_s"])  # the next epoch has measured nothing yet
        return {"best_val_acc": pos.best_val_acc, "best_epoch": pos.best_epoch, "epochs": pos.epoch}

    def _early_stopped(self) -> bool:
        """Whether early_stop epochs have passed without a better one: asked before every epoch, so that a run
        interrupted after its early stop (in the int8 calibration, say) and resumed trains no further."""
        return bool(self.cfg.early_stop) and self.pos.epoch - self.pos.best_epoch >= self.cfg.early_stop


def run_training(cfg: TrainConfig, run_dir: Path, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Start a run of cfg in a new run_dir, keeping status.json true whatever happens."""
    run = RunDir(run_dir)
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"{run_dir} is a file: --run-dir takes a directory")
    if run.file(CONFIG).exists():
        if not run.reusable():
            raise UserError(run.why_taken())
        for earlier in (METRICS, BEST, TEACHER_TARGETS):  # nothing to keep: the directory is this run's now
            run.file(earlier).unlink(missing_ok=True)
    return _run(cfg, run, False, on_progress, created=not run.path.exists())


def resume_training(run_dir: Path, on_progress: ProgressCallback | None = None, *,
                    threads: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Continue a run from its last.pt with its own recipe; only where it runs (threads, device) may change."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError(f"{run_dir} is not a run directory" if run.path.exists() else f"no run at {run_dir}")
    if not run.file(LAST).exists():
        raise UserError(f"nothing to resume in {run_dir}: " + (
            "it ended before its first save; start it again with the same command" if run.file(CONFIG).exists()
            else f"it has no {LAST}"))
    if run.status().get("state") == "finished":
        raise UserError(f"{run_dir} has finished: nothing to resume")
    if not run.config():  # missing or damaged: the defaults would train something else on other data
        raise UserError(f"{run_dir}: its {CONFIG} is missing or unreadable, so its recipe is unknown: restore it "
                        f"(or start a new run with --init {run.file(LAST)})")
    runtime = {k: v for k, v in {"threads": threads, "device": device}.items() if v is not None}
    return _run(TrainConfig.from_dict({**run.config(), **runtime}), run, True, on_progress)


def _run(cfg: TrainConfig, run: RunDir, resume: bool, on_progress: ProgressCallback | None,
         created: bool = False) -> dict[str, Any]:
    """Train cfg in run (fresh or from its last.pt), keeping status.json true whatever happens. created: this
    call makes the directory, and removes it again when bad input (data, checkpoints, device) stops the run
    before it trains."""
    if not resume:
        cfg.validate()  # before anything is written: a bad option or a missing data path leaves no run behind
    run.acquire()
    trainer: Trainer | None = None
    try:
        if resume:
            cfg.validate()  # a resume that cannot start (its data gone, say) says why in the run's status
        run.clear_stop()
        if not resume:  # before the status: a run seen starting always has its recipe (a stop then can be re-run)
            run.write_config(cfg.to_dict())
        run.write_status(state="starting", pid=os.getpid(), pid_token=process_token(os.getpid()),
                         threads=hardware.thread_count(cfg.threads),
                         epoch=0, total_epochs=cfg.epochs, started=run.status_raw().get("started", time.time()),
                         error=None, startup=None)
        with _StartupWatch(run):
            trainer = Trainer(cfg, run, on_progress, resume)
        if resume:
            run.truncate_log(trainer.pos.epoch)
        try:
            result = trainer.fit()
            trainer.calibrate_best()
        except StopRequested:
            if not run.file(LAST).exists() and trainer.pos.epoch == trainer.pos.step == 0:
                raise KeyboardInterrupt from None  # stopped before its first step: nothing to save
            trainer._save_last()
            trainer.calibrate_best()
            where = {"epoch": trainer.pos.epoch + 1, "step": trainer.pos.step, "steps": trainer.steps_per_epoch,
                     "best_val_acc": trainer.pos.best}
            run.write_status(state="stopped", pid=None, eta_s=None, **where)
            return {"stopped": True, **where}
        run.write_status(state="finished", pid=None, epoch=result["epochs"], eta_s=0.0,
                         best_val_acc=result["best_val_acc"])
        return result
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or STOP before training began, or Ctrl-C while saving at the end
        why = "stopped before training began" if run.stop_requested() else "interrupted (Ctrl-C or SIGTERM)"
        run.write_status(state="interrupted", pid=None, error=why)
        raise
    except Exception as exc:
        if created and trainer is None and isinstance(exc, SHOWN_AS_ONE_LINE):
            shutil.rmtree(run.path, ignore_errors=True)  # bad input (or an unreadable file) found while starting
            raise
        message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        run.write_status(state="failed", pid=None, error=message)
        raise
    finally:  # both do nothing once the directory is gone
        run.clear_stop()
        run.release()
