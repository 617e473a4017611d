"""The training recipe as one dataclass, and the named presets."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from fercore.augment import AugmentConfig
from fercore.data import check_source
from fercore.errors import UserError
from fercore.labels import EMOTIONS, resolve_classes

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "plateau", "exponential", "constant")
CLASS_WEIGHTS = ("none", "balanced", "sqrt")
AMP_MODES = ("auto", "on", "off")
TEACHING = ("fixed", "live")  # what distillation's teachers see: each plain face once, or every augmented batch
MAX_EPOCHS = 10_000  # a typo's bound: the longest published FER2013 schedules run a few hundred


@dataclass
class TrainConfig:
    """Everything needed to reproduce a run (saved as the run's config.json)."""

    data: str = "synthetic"
    classes: list[str] = field(default_factory=lambda: list(EMOTIONS))
    arch: str = "fernet"
    arch_args: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    label_smoothing: float = 0.1
    class_weights: str = "none"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stop: int = 0  # patience in epochs without a better val accuracy; 0 = off
    val_fraction: float = 0.1
    split_seed: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0 = every usable core
    amp: str = "auto"  # auto / on / off
    tta: bool = True  # the checkpoint's default for evaluation and prediction
    init_from: str | None = None  # start from this checkpoint's weights (same architecture and classes)
    teachers: list[str] = field(default_factory=list)  # checkpoints whose averaged predictions are soft targets
    distill: float = 0.5  # weight of the teachers' soft targets in the loss (used only with teachers)
    teaching: str = "fixed"  # what the teachers see: each plain face once (fixed) or every augmented batch (live)
    swa_epochs: int = 0  # average the weights of the last this many epochs (stochastic weight averaging); 0 = off

    def validate(self) -> None:
        """A one-line UserError for the first option that cannot make a run (types, names, ranges)."""
        from fercore.models import ARCHITECTURES, check_args  # torch: imported only when a run is checked

        self.check_types()
        if not all(isinstance(c, str) for c in self.classes):
            raise UserError(f"classes must be names of emotions: {', '.join(EMOTIONS)}")
        try:
            classes = list(resolve_classes(self.classes))
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if self.arch not in ARCHITECTURES:
            raise UserError(f"unknown architecture {self.arch!r}: choose from {', '.join(ARCHITECTURES)}")
        try:
            check_args(self.arch, len(self.classes), self.arch_args)
        except ValueError as exc:
            raise UserError(f"arch_args {self.arch_args} do not fit {self.arch}: {exc}") from None
        check_source(self.data)
        checks = [
            (classes == list(self.classes), f"classes must be distinct and in the order {', '.join(EMOTIONS)}"),
            (all(isinstance(t, str) for t in self.teachers), "teachers must be checkpoint paths"),
            (1 <= self.epochs <= MAX_EPOCHS, f"epochs must be from 1 to {MAX_EPOCHS:,}"),
            (self.batch_size >= 2, "batch size must be at least 2"),
            (0 < self.lr <= 10, "learning rate must be positive and at most 10"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.class_weights in CLASS_WEIGHTS, f"class weights must be one of {', '.join(CLASS_WEIGHTS)}"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (0 < self.val_fraction < 0.5, "validation fraction must be in (0, 0.5)"),
            (self.amp in AMP_MODES, f"amp must be one of {', '.join(AMP_MODES)}"),
            (0 < self.distill <= 1, "the distillation weight must be in (0, 1]"),
            (self.teaching in TEACHING, f"teaching must be one of {', '.join(TEACHING)}"),
            (self.weight_decay >= 0, "weight decay must not be negative"),
            (all(0 <= v < math.inf for k, v in self.augment.to_dict().items() if k != "erase_area"),
             "augmentation strengths must be finite and not negative (0 = off)"),
            (self.early_stop >= 0, "early-stop patience must not be negative (0 = off)"),
            (0 <= self.swa_epochs <= self.epochs, "weight-averaging epochs must be between 0 (off) and the epochs"),
            (self.threads >= 0, "threads must not be negative (0 = every core)"),
            (0 <= self.seed < 2**32, "seed must be a whole number from 0 to 4294967295"),
            (0 <= self.split_seed < 2**32, "split_seed must be a whole number from 0 to 4294967295"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def check_types(self) -> None:
        """Each option of the type of its default (as a hand-written or edited config.json might not be)."""
        defaults = TrainConfig()
        for option in fields(self):
            value, default = getattr(self, option.name), getattr(defaults, option.name)
            if default is None:  # init_from: a path or nothing
                ok = value is None or isinstance(value, str)
            else:
                ok = (isinstance(value, (int, float) if type(default) is float else type(default))
                      and isinstance(value, bool) == isinstance(default, bool))
            if not ok:
                kind = ("a path or null" if default is None else "a JSON object" if isinstance(
                    default, (dict, AugmentConfig)) else f"of type {type(default).__name__}")
                raise UserError(f"training option {option.name} must be {kind}, not {value!r}")
            if type(default) is float and not math.isfinite(value):
                raise UserError(f"training option {option.name} must be a finite number, not {value!r}")

    def val_split(self) -> dict[str, Any]:
        """The validation carve as checkpoints record it."""
        return {"fraction": self.val_fraction, "seed": self.split_seed}

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["augment"] = self.augment.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UserError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        values = dict(values)
        if isinstance(values.get("augment"), dict):
            values["augment"] = AugmentConfig.from_dict(values["augment"])
        return cls(**values)


# The fer2013 family's shared recipe: onecycle SGD from lr 0.05 on fernet, the presets below vary it.
FER2013_RECIPE: dict[str, Any] = dict(arch="fernet", epochs=80, batch_size=128, optimizer="sgd", lr=0.05,
                                      schedule="onecycle", weight_decay=5e-4, label_smoothing=0.1,
                                      class_weights="sqrt")

PRESETS: dict[str, dict[str, Any]] = {
    # The one-run recipe, and the Train page's default on FER2013 data: int8 validation 70.37% with TTA (68.80%
    # without), macro F1 0.690; it was the shipped model until the wider distilled one (fer2013-wide) replaced it.
    "fer2013": FER2013_RECIPE,
    # Continuing a fer2013 run (--init RUN/best.pt) with a fresh, lower learning-rate cycle and a fresh seed.
    # Measured on a fer2013 run: validation 68.80% -> 69.43% without TTA, 70.37% -> 70.47% with it.
    "fer2013-restart": {**FER2013_RECIPE, "epochs": 60, "lr": 0.02, "seed": 1},
    # The fer2013 recipe, also taught by trained models: give them with --teachers (none may have learned the
    # validation faces). Measured with a fer2013 run, its warm restart and a second seed as teachers, against that
    # fer2013 run (int8): validation 68.80% -> 69.50% without TTA, 70.37% -> 70.44% with it; macro F1 with TTA
    # 0.690 -> 0.688.
    "fer2013-distill": {**FER2013_RECIPE, "distill": 0.7},
    # The shipped model's recipe: the distilled recipe on a 1.5x wider fernet (48-384 channels, 4.3 M parameters,
    # 2.25x the compute), 100 epochs, taught by four fer2013-family runs (README: "Reproduce the shipped model").
    # Measured against the fer2013 preset's model (int8, TTA): validation 70.37% -> 71.34%, macro F1 0.690 -> 0.704.
    "fer2013-wide": {**FER2013_RECIPE, "distill": 0.7, "arch_args": {"widths": [48, 96, 192, 384]}, "epochs": 100},
    # The distilled recipe on a 2x wider fernet (64-512 channels, 7.3 M parameters, 1.8x fer2013-wide's compute),
    # 120 epochs, taught by the shipped fer2013-wide model. Measured against it (int8, TTA): validation 71.34% ->
    # 71.69% (94 faces gained, 84 lost: McNemar p = 0.5), macro F1 0.704 -> 0.703, inference 1.4-2.8x slower;
    # not shipped (README: "Wider still").
    "fer2013-2x": {**FER2013_RECIPE, "distill": 0.7, "arch_args": {"widths": [64, 128, 256, 512]}, "epochs": 120},
    # A minute on a laptop CPU: the synthetic demo set, end to end.
    "demo": dict(data="synthetic", arch="basic", epochs=8, batch_size=64, optimizer="adamw", lr=3e-3,
                 weight_decay=1e-4, schedule="onecycle", label_smoothing=0.0,
                 augment=AugmentConfig(rotate=5, scale=0.05, translate=0.05, brightness=0.1, contrast=0.1, erase=0)),
}


PRESET_NEEDS = {"fer2013-distill": ("teachers", "--teachers CHECKPOINT..."),  # what a preset cannot go without
                "fer2013-wide": ("teachers", "--teachers CHECKPOINT..."),
                "fer2013-2x": ("teachers", "--teachers CHECKPOINT..."),
                "fer2013-restart": ("init_from", "--init CHECKPOINT")}


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[name], **overrides})


def preset_usable(name: str, cfg: TrainConfig) -> bool:
    """Whether cfg has what preset name cannot go without (the teachers of fer2013-distill)."""
    option, _ = PRESET_NEEDS.get(name, (None, ""))
    return not option or bool(getattr(cfg, option))


def check_preset_needs(name: str, cfg: TrainConfig) -> None:
    """A one-line error when a preset is used without what it needs."""
    if not preset_usable(name, cfg):
        raise UserError(f"the {name} preset needs {PRESET_NEEDS[name][1]}")


def _run_recipe(config: dict[str, Any]) -> TrainConfig:
    """A run's config.json as a TrainConfig, options this fercore does not know left out."""
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig.from_dict({k: v for k, v in config.items() if k in known})


def matching_preset(config: dict[str, Any]) -> str | None:
    """The preset a run's config follows (every option of the recipe the preset sets, data aside), if any."""
    if not config:
        return None
    values = _run_recipe(config).to_dict()
    for name, options in sorted(PRESETS.items(), key=lambda item: -len(item[1])):  # the most specific first
        wanted = preset(name).to_dict()
        if all(values[k] == wanted[k] for k in options if k != "data"):
            return name
    return None


# Recipe options whose `fercore train` flag is their name in dashes (the data, the machine's options, the
# teachers and --init are given apart)
FLAGGED_OPTIONS = ("arch", "epochs", "batch_size", "lr", "optimizer", "schedule", "weight_decay", "label_smoothing",
                   "class_weights", "early_stop", "val_fraction", "seed", "swa_epochs", "teaching")
UNFLAGGED_OPTIONS = ("momentum", "nesterov", "split_seed", "tta")  # set only by --config
MIXING = ("mixup", "cutmix")


def recipe_flags(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The fewest `fercore train` flags that make a run's config.json recipe (from a preset the run could name, or
    the defaults), and the options in which it differs that no flag sets (they come from --config or the app)."""
    cfg = _run_recipe(config)
    usable = [name for name in PRESETS if preset_usable(name, cfg)]
    candidates = [_flags_from(cfg, name) for name in [*usable, None]]  # on a tie, the first preset: it names the intent
    return min(candidates, key=lambda found: len(found[0]) + len(found[1]))


def _flags_from(cfg: TrainConfig, name: str | None) -> tuple[list[str], list[str]]:
    """recipe_flags from preset name (None: the defaults)."""
    from fercore import models  # torch's model code: only when a card is written

    base = preset(name) if name else TrainConfig()
    flags = [f"--preset {name}"] if name else []
    flags += [f"--{option.replace('_', '-')} {getattr(cfg, option)}" for option in FLAGGED_OPTIONS
              if getattr(cfg, option) != getattr(base, option) and (option != "teaching" or cfg.teachers)]
    unflagged = [option for option in UNFLAGGED_OPTIONS if getattr(cfg, option) != getattr(base, option)]
    if cfg.classes != base.classes:
        flags.append("--classes " + " ".join(cfg.classes))
    if cfg.arch_args != base.arch_args:
        factor = models.width_factor(cfg.arch, cfg.arch_args)
        if cfg.arch_args == models.width_args(cfg.arch, factor):
            flags.append(f"--width {factor:g}")
        else:
            unflagged.append("arch_args")
    unmixed = dataclasses.replace(cfg.augment, mixup=0, cutmix=0)  # --mixup and --cutmix are added on top
    mixed_into = base.augment
    if unmixed != dataclasses.replace(base.augment, mixup=0, cutmix=0):
        if unmixed == AugmentConfig.off():
            flags.append("--no-augment")
            mixed_into = AugmentConfig.off()
        else:
            unflagged.append("augment")
    flags += [f"--{k} {getattr(cfg.augment, k)}" for k in MIXING if getattr(cfg.augment, k) != getattr(mixed_into, k)]
    return flags, unflagged
