"""`python -m fercore`: train, evaluate, compare, predict, video, export, ship, runs. User errors: one line."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fercore.errors import UserError

if TYPE_CHECKING:
    from fercore.checkpoint import LoadedModel
    from fercore.config import TrainConfig
    from fercore.runs import RunDir


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"fercore: error: {message} (see --help)\n")


def _progress_printer(run_dir: str | Path, stream=sys.stderr):
    """Where the run is, once it has started; then a one-line progress bar on a terminal, one line per epoch (and a
    quarter of the start's long steps) otherwise."""
    from fercore.runs import describe_startup

    tty = stream.isatty()
    quarters_told: set[int] = set()  # without a terminal, the start's progress is a line a quarter
    started: list[bool] = []

    def show(record: dict[str, Any]) -> None:
        if record["type"] in ("startup", "progress") and not started:
            started.append(True)
            stream.write(f"training in {run_dir} (stop, keeping last.pt: Ctrl-C or python -m fercore runs --stop "
                         f"{run_dir})\n")
        if record["type"] == "data":
            stream.write(f"data: {record['note']}\n")
        elif record["type"] == "startup":
            quarter = 4 * record["done"] // max(record["total"], 1)
            if tty or quarter not in quarters_told:
                quarters_told.add(quarter)
                ended, eta_s = quarter == 4, record["eta_s"]
                text = describe_startup(record) + ("" if ended or eta_s is None else f", ETA {eta_s / 60:.0f} min")
                stream.write((f"\r{text}" + ("\n" if ended else " ")) if tty else f"{text}\n")
                stream.flush()
        elif record["type"] == "progress" and tty:
            frac = record["step"] / record["steps"]
            bar = "#" * int(frac * 24)
            stream.write(f"\repoch {record['epoch']} [{bar:<24}] {record['step']}/{record['steps']} "
                         f"loss {record['train_loss']:.3f} acc {record['train_acc']:.3f} "
                         f"{record['images_per_s']:.0f} img/s ")
            stream.flush()
        elif record["type"] == "epoch":
            stream.write(("\r" if tty else "") + f"epoch {record['epoch']}: train loss {record['train_loss']:.3f} "
                         f"acc {record['train_acc']:.3f} | val loss {record['val_loss']:.3f} "
                         f"acc {record['val_acc']:.3f} "
                         f"f1 {record['val_macro_f1']:.3f} | lr {record['lr']:.2e} | {record['seconds']:.0f}s "
                         f"{record['images_per_s']:.0f} img/s\n")
            stream.flush()
    return show


def cmd_train(args: argparse.Namespace) -> int:
    from fercore import models
    from fercore.augment import AugmentConfig
    from fercore.config import PRESETS, TrainConfig, check_preset_needs, preset
    from fercore.paths import output_path, runs_dir
    from fercore.runs import default_run_name
    from fercore.train import run_training

    if args.resume:
        return _resume(args)
    overrides: dict[str, Any] = {k: v for k, v in {
        "data": args.data, "arch": args.arch, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "optimizer": args.optimizer, "schedule": args.schedule, "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing, "class_weights": args.class_weights, "early_stop": args.early_stop,
        "val_fraction": args.val_fraction, "seed": args.seed, "device": args.device, "threads": args.threads,
        "amp": args.amp, "init_from": args.init, "teachers": args.teachers, "distill": args.distill,
        "teaching": args.teaching, "swa_epochs": args.swa_epochs,
    }.items() if v is not None}
    if args.classes:
        from fercore.labels import resolve_classes
        try:
            overrides["classes"] = list(resolve_classes(args.classes))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if args.no_augment:
        overrides["augment"] = AugmentConfig.off()
    if args.config:  # a saved config.json (the app's launch file, another run's); flags override it
        try:
            saved = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read --config {args.config}: {exc}") from None
        if not isinstance(saved, dict):
            raise UserError(f"--config {args.config} is not a JSON object of training options")
        overrides = {**saved, **overrides}
    if "data" not in {**PRESETS.get(args.preset, {}), **overrides}:  # the demo preset names its data
        raise UserError("--data is required (a folder, archive.zip, fer2013.csv, or 'synthetic')")
    cfg = preset(args.preset, **overrides) if args.preset else TrainConfig.from_dict(overrides)
    cfg.check_types()  # a hand-edited --config's null augment or arch_args, before the flags below build on them
    if args.width is not None:
        if not 0.25 <= args.width <= 4:
            raise UserError("--width must be between 0.25 and 4")
        if cfg.arch not in models.names():
            cfg.validate()  # the unknown architecture's message
        others = {k: v for k, v in cfg.arch_args.items() if k != "widths"}
        cfg.arch_args = {**others, **models.width_args(cfg.arch, args.width)}
    mixing = {k: v for k, v in {"mixup": args.mixup, "cutmix": args.cutmix}.items() if v is not None}
    cfg.augment = dataclasses.replace(cfg.augment, **mixing)  # added to the preset's or config's augmentation
    if args.preset:
        check_preset_needs(args.preset, cfg)
    cfg.validate()  # types and paths checked before they are anchored
    _anchor_paths(cfg)
    run_dir = output_path(args.run_dir) if args.run_dir else runs_dir() / default_run_name(cfg.arch)
    for flag, value in (("--distill", args.distill), ("--teaching", args.teaching)):
        if value is not None and not cfg.teachers:
            raise UserError(f"{flag} is about the teachers' predictions: give --teachers too")
    result = run_training(cfg, run_dir, on_progress=_progress_printer(run_dir))
    return _train_result(result, run_dir)


def _anchor_paths(cfg: TrainConfig) -> None:
    """The run's data, --init and teacher paths made absolute (a run directory given as a checkpoint becomes its
    best.pt), so that its config.json means the same files wherever it is resumed or read from."""
    from fercore.checkpoint import checkpoint_file
    from fercore.data.dataset import is_synthetic

    def anchored(path: str) -> str:
        return os.path.abspath(checkpoint_file(os.path.expanduser(path)))

    if not is_synthetic(cfg.data):
        cfg.data = os.path.abspath(os.path.expanduser(cfg.data))
    cfg.init_from = anchored(cfg.init_from) if cfg.init_from else None
    cfg.teachers = [anchored(t) for t in cfg.teachers]


def _train_result(result: dict[str, Any], run_dir: str | Path) -> int:
    """Print the result; the exit code: 0 for a finished run, 130 for one stopped (Ctrl-C, SIGTERM, a STOP file)
    with last.pt saved, so that `train ... && ship ...` never ships a half-trained model."""
    print(json.dumps({**result, "run_dir": str(run_dir)}))
    if not result.get("stopped"):
        return 0
    print(f"fercore: stopped in epoch {result['epoch']} (step {result['step']} of {result['steps']}), last.pt "
          f"saved; continue with: python -m fercore train --resume {run_dir}", file=sys.stderr)
    return 130


RUNTIME_FLAGS = {"resume", "threads", "device", "func", "command"}  # what --resume may set beside the run's recipe


def _resume(args: argparse.Namespace) -> int:
    """train --resume RUN_DIR: the run's own recipe; only --threads and --device may go with it."""
    from fercore.train import resume_training

    recipe_flags = sorted(f"--{name.replace('_', '-')}" for name, value in vars(args).items()
                          if name not in RUNTIME_FLAGS and value is not None and value is not False)
    if recipe_flags:
        raise UserError(f"--resume continues the run's own recipe: drop {', '.join(recipe_flags)} "
                        "(only --threads and --device may change)")
    result = resume_training(Path(args.resume), _progress_printer(args.resume), threads=args.threads,
                             device=args.device)
    return _train_result(result, args.resume)


def _use_threads(threads: int | None) -> None:
    """--threads of evaluate, compare and predict: torch's CPU threads (0 = every usable core; default: torch's
    own)."""
    from fercore import hardware

    if threads is not None:
        if threads < 0:
            raise UserError("threads must not be negative (0 = every core)")
        hardware.configure_threads(threads)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fercore.checkpoint import read_checkpoint
    from fercore.evaluate import evaluate
    from fercore.leakage import learned_digests

    _use_threads(args.threads)
    if args.unseen_only and learned_digests(read_checkpoint(args.checkpoint)) is None:
        raise UserError(f"{args.checkpoint} keeps no digests of its training faces (it predates them): add them with "
                        "'python -m fercore ship --checkpoint CHECKPOINT --data ITS_TRAINING_DATA --out "
                        "A_FOLDER_OF_ITS_OWN/model.pt', or leave out --unseen-only")
    report = evaluate(args.checkpoint, args.data, args.split, args.tta, args.precision, args.device)
    notes = [report.data_note, report.seen_note()]
    if args.unseen_only:
        if report.unseen_accuracy is None:
            raise UserError(f"the model trained on all {len(report.labels):,} of these faces: none is left to score")
        report = report.without_seen()
        notes.append(f"scored only the {len(report.labels):,} faces the model did not train on "
                     f"({report.left_out:,} left out)" if report.left_out else "none of these faces is a training face")
    for note in (*notes, report.absent_note()):
        if note:
            print(f"data: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    print(f"{report.data} [{report.split}] n={len(report.labels)} tta={'on' if report.tta else 'off'} "
          f"dtype={report.dtype}")
    print(f"accuracy {report.accuracy:.4f}   macro F1 {report.macro_f1:.4f}")
    print(report.calibration().summary())
    if note := report.scaling_note():
        print(f"  {note}")
    print(f"{'class':<10} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}")
    for name, row in report.per_class().items():
        print(f"{name:<10} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>7.3f} {row['support']:>8d}")
    print("confusion (rows = true, columns = predicted):")
    print(" " * 10 + " ".join(f"{c:>8}" for c in report.classes))
    for name, row in zip(report.classes, report.confusion()):
        print(f"{name:<10}" + " ".join(f"{v:>8d}" for v in row))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from fercore.compare import compare

    _use_threads(args.threads)
    comparison = compare(args.against, args.checkpoint, args.data, args.split, args.tta, args.precision, args.device)
    for note in (comparison.first.data_note, *comparison.notes(), comparison.first.absent_note()):
        if note:
            print(f"data: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(comparison.to_json()))
        return 0
    first = comparison.first
    print(f"{first.data} [{first.split}] n={len(first.labels)}")
    width = max(map(len, comparison.names))
    for role, name, report in zip(("against", "model"), comparison.names, (first, comparison.second)):
        print(f"{role:<8} {name:<{width}}  accuracy {report.accuracy:.4f}  macro F1 {report.macro_f1:.4f}  "
              f"tta={'on' if report.tta else 'off'} dtype={report.dtype}")
    print(comparison.verdict())
    print(f"same label on {comparison.agreement:.1%} of the faces")
    print(f"{'class':<10} {'faces':>6} {'recall: against':>15} {'model':>6} {'gained':>7} {'lost':>5}")
    for name, row in comparison.per_class().items():
        recalls = [f"{r:.3f}" if r is not None else "-" for r in (row["first_recall"], row["second_recall"])]
        print(f"{name:<10} {row['faces']:>6d} {recalls[0]:>15} {recalls[1]:>6} {row['gained']:>7d} {row['lost']:>5d}")
    return 0


def cmd_video(args: argparse.Namespace) -> int:
    from fercore.atomic import atomic_write_bytes
    from fercore.paths import output_path, user_path
    from fercore.predict import Predictor
    from fercore.video import annotate_video

    _use_threads(args.threads)
    source = user_path(args.video)
    if not source.is_file():
        raise UserError(f"{source} is not a file")
    out = output_path(args.out) if args.out else source.with_name(f"{source.stem}-annotated.mp4")
    if out.suffix.lower() not in (".mp4", ".m4v"):
        raise UserError(f"--out {out}: the annotated video is an H.264 MP4: give a name ending in .mp4")
    csv = output_path(args.csv) if args.csv else None
    taken = {source.resolve(): "the video itself"}
    for flag, path in (("--out", out), ("--csv", csv)):  # told now, not after minutes of work
        if path is None:
            continue
        if path.is_dir():
            raise UserError(f"{flag} {path} is a folder: name the file to write")
        if path.resolve() in taken:
            raise UserError(f"{flag} {path} is {taken[path.resolve()]}: name another file")
        taken[path.resolve()] = "the annotated video (--out)"
    predictor = Predictor.from_checkpoint(args.checkpoint, args.precision, args.device)
    result = annotate_video(source, out, predictor)
    print(f"{source}: {result.summary(predictor.classes)}")
    print(f"wrote {out}")
    if csv:
        atomic_write_bytes(csv, result.timeline_csv(predictor.classes).encode())
        print(f"wrote {csv}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from fercore.explain import maps_folder, save_maps
    from fercore.predict import Predictor, predict_files

    _use_threads(args.threads)
    folder = maps_folder(args.explain) if args.explain else None  # refused before any work
    predictor = Predictor.from_checkpoint(args.checkpoint, args.precision, args.device)
    results = predict_files(predictor, args.images)
    maps = save_maps(predictor.loaded, results, folder) if folder else [[] for _ in results]
    if args.json:
        out = [r.to_json() for r in results]
        for image, paths in zip(out, maps):
            for face, path in zip(image["faces"], paths):
                face["explanation"] = str(path)
        print(json.dumps(out))
    for result, paths in zip(results, maps):
        if result.error:
            print(f"fercore: error: {result.image}: {result.error}", file=sys.stderr)
        elif not args.json and result.no_face_found:
            face = result.faces[0]
            print(f"{result.image}: no face found, the whole image read as one: {face.label} {face.confidence:.1%}")
        elif not args.json:
            print(f"{result.image}: {len(result.faces)} face{'s' * (len(result.faces) != 1)}")
            for face in result.faces:
                x, y, w, h = face.box
                print(f"  face at x={x} y={y} w={w} h={h}: {face.label} {face.confidence:.1%}")
        if not args.json and paths:
            print(f"  where the model looked: {', '.join(map(str, paths))}")
    return 0 if any(r.error is None for r in results) else 2


def cmd_export(args: argparse.Namespace) -> int:
    from fercore.export import export
    from fercore.paths import output_path

    print(export(args.checkpoint, args.format, output_path(args.out)).summary())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from fercore import models

    header = f"parameters at --width {', '.join(f'{w:g}' for w in models.WIDTHS)}"
    print(f"{'name':<8} {header:<32} description")
    for name, arch in models.ARCHITECTURES.items():
        counts = [models.parameter_count(models.build(name, 7, **models.width_args(name, w))) for w in models.WIDTHS]
        print(f"{name:<8} {', '.join(f'{c / 1e6:.2f}M' for c in counts):<32} {arch.description}")
    return 0


def _training_run(path: Path, named: str) -> RunDir:
    """The run in the folder path; a one-line error, naming it as named, when the folder holds no run."""
    from fercore.runs import CONFIG, RunDir

    run = RunDir(path)
    if not run.file(CONFIG).is_file():
        raise UserError(f"{named} is not a training run (it has no {CONFIG})")
    return run


def cmd_runs(args: argparse.Namespace) -> int:
    from fercore.runs import list_runs

    if args.stop:
        run = _training_run(Path(args.stop), args.stop)
        if not run.is_active():
            raise UserError(f"{args.stop} is not training (state: {run.status().get('state', 'unknown')})")
        run.request_stop()
        print(f"stop requested: {args.stop}")
        return 0
    root = Path(args.root)
    if root.exists() and not root.is_dir():
        raise UserError(f"{args.root} is not a folder of runs")
    rows = [r.summary() for r in list_runs(root)] if root.is_dir() else []  # none yet: an empty listing
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no runs in {args.root}", file=sys.stderr)
    else:
        print(f"{'run':<32} {'state':<12} {'arch':<8} {'epochs':>7} best val acc")
    for row in rows:
        best = f"{row['best_val_acc']:.3f}" if row["best_val_acc"] is not None else "-"
        print(f"{row['name']:<32} {row['state']:<12} {row['arch'] or '-':<8} {row['epochs']:>7} {best}")
        if row["error"]:
            print(f"  {row['state']}: {row['error']}")
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    from fercore.card import ship
    from fercore.checkpoint import checkpoint_file
    from fercore.paths import output_path, user_path

    run = _training_run(user_path(args.run), f"--run {args.run}").path if args.run else None
    out = output_path(args.out)
    replaced = _model_in(out)  # read before ship overwrites it, to say what the new model changes
    card = ship(checkpoint_file(args.checkpoint), args.data, out, run, args.half)
    v = card["validation"]["tta"]
    print(f"{args.out}: validation accuracy {v['accuracy']:.4f}, macro F1 {v['macro_f1']:.4f}")
    if replaced is not None:
        print(f"against the model it replaced, on its validation faces: {_replacement(replaced, out, args.data)}")
    return 0


def _model_in(path: Path) -> LoadedModel | None:
    """The model a file holds, if it holds a readable one."""
    from fercore.checkpoint import load_model

    try:
        return load_model(path) if path.is_file() else None
    except UserError:  # not a checkpoint: ship replaces it all the same, as before
        return None


def _replacement(replaced: LoadedModel, out: Path, data: str) -> str:
    """The comparison's verdict of the shipped model against the one it replaced (or why there is none)."""
    from fercore.checkpoint import load_model
    from fercore.compare import compare_loaded
    from fercore.data import load_data

    shipped = load_model(out)
    if replaced.classes != shipped.classes:
        return f"not compared: it predicted {', '.join(replaced.classes)}"
    comparison = compare_loaded(replaced, shipped, load_data(data), "val", ("before", "now"), carve_of=shipped.info)
    return "; ".join([comparison.verdict(), *comparison.notes()])


def _show_recipe_defaults(train: argparse.ArgumentParser) -> None:
    """Each recipe option's help ends with its default (a preset or --config changes it; flags are None
    until given, so that they can override those)."""
    from fercore.config import TrainConfig

    defaults = TrainConfig()
    recipe = {f.name for f in dataclasses.fields(TrainConfig)} - {"data", "classes", "teachers", "augment"}
    for action in train._actions:
        if action.dest in recipe:
            default = getattr(defaults, action.dest)
            action.help = f"{action.help}; default {default}" if action.help else f"default {default}"


def build_parser() -> _Parser:
    from fercore.checkpoint import PRECISIONS
    from fercore.config import AMP_MODES, CLASS_WEIGHTS, OPTIMIZERS, SCHEDULES, TEACHING
    from fercore.data.dataset import SPLITS
    from fercore.export import FORMATS
    from fercore.hardware import DEVICES

    parser = _Parser(prog="python -m fercore",
                     description="Facial emotion recognition: train, evaluate, compare, predict, video, export.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a model from scratch; the run goes to --run-dir")
    train.add_argument("--data", help="folder, archive.zip, fer2013.csv, or 'synthetic[:N]'")
    train.add_argument("--preset", help="a named recipe: fer2013, fer2013-restart (with --init), "
                                        "fer2013-distill, fer2013-wide or fer2013-2x (with --teachers), demo")
    train.add_argument("--config", metavar="JSON", help="start from a saved config.json (a run's); flags override it")
    train.add_argument("--classes", nargs="+", help="emotion names or a set name (basic4); default all 7")
    train.add_argument("--arch", help="architecture name (see 'python -m fercore models')")
    train.add_argument("--width", type=float, metavar="FACTOR",
                       help="scale every stage's channels (the shipped model: fernet at 1.5); default 1")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--schedule", choices=SCHEDULES)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--label-smoothing", type=float)
    train.add_argument("--class-weights", choices=CLASS_WEIGHTS)
    train.add_argument("--early-stop", type=int, metavar="PATIENCE")
    train.add_argument("--val-fraction", type=float)
    train.add_argument("--no-augment", action="store_true")
    train.add_argument("--mixup", type=float, metavar="ALPHA",
                       help="blend pairs of faces and their labels, the share drawn from Beta(ALPHA, ALPHA); 0 = off")
    train.add_argument("--cutmix", type=float, metavar="ALPHA",
                       help="paste a patch of another face, labels shared by area (Beta(ALPHA, ALPHA)); 0 = off; "
                            "with --mixup each batch takes one of the two")
    train.add_argument("--init", metavar="CHECKPOINT",
                       help="start from a checkpoint's weights (same architecture and classes, not trained on "
                            "this run's validation faces), fresh schedule")
    train.add_argument("--teachers", nargs="+", metavar="CHECKPOINT",
                       help="distil: their averaged predictions become soft targets (same classes; none may have "
                            "learned this run's validation faces)")
    train.add_argument("--distill", type=float, metavar="WEIGHT",
                       help="weight of the teachers' soft targets in the loss, in (0, 1]")
    train.add_argument("--teaching", choices=TEACHING,
                       help="what the teachers see: fixed = each plain face once, before the first epoch; live = "
                            "every augmented (and mixed) batch the student sees, which costs their forward pass "
                            "each step")
    train.add_argument("--swa-epochs", type=int, metavar="N",
                       help="average the weights of the last N epochs (stochastic weight averaging); 0 = off")
    train.add_argument("--run-dir")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or interrupted run from its last.pt")
    train.add_argument("--device", choices=DEVICES)
    train.add_argument("--threads", type=int, help="CPU threads (0 = all cores)")
    train.add_argument("--amp", choices=AMP_MODES)
    train.add_argument("--seed", type=int)
    train.set_defaults(func=cmd_train)
    _show_recipe_defaults(train)

    from fercore.paths import RUNS_DIR_ENV, SHIPPED_CHECKPOINT, runs_dir

    evaluate = sub.add_parser("evaluate", help="accuracy, macro F1, per-class report and confusion of a checkpoint")
    evaluate.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT))
    evaluate.add_argument("--data", required=True, help="folder, archive.zip, fer2013.csv, or 'synthetic'")
    evaluate.add_argument("--split", default="test", choices=SPLITS,
                          help="default test; val: the data's own, else the checkpoint's carve of train; "
                               "all: every face")
    evaluate.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                          help="average over the face, a 10%% zoom and both mirrored (default: the checkpoint's)")
    evaluate.add_argument("--unseen-only", action="store_true",
                          help="score only the faces the model did not train on (pixel for pixel)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=cmd_evaluate)

    compare = sub.add_parser("compare", help="a checkpoint against another on the same faces: the faces it gains and "
                                             "loses, and whether the difference is more than chance")
    compare.add_argument("checkpoint", help="the model to judge, say RUN_DIR/best.pt")
    compare.add_argument("--against", default=str(SHIPPED_CHECKPOINT), help="the model to beat (default: the shipped "
                         "one); --split val takes its validation carve")
    compare.add_argument("--data", required=True, help="folder, archive.zip, fer2013.csv, or 'synthetic'")
    compare.add_argument("--split", default="test", choices=SPLITS, help="default test")
    compare.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                         help="test-time augmentation for both (default: each checkpoint's own)")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(func=cmd_compare)

    predict = sub.add_parser("predict", help="detect faces in images and classify their emotions")
    predict.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT))
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders: every image directly in "
                         "them, by name")
    predict.add_argument("--json", action="store_true")
    predict.add_argument("--explain", metavar="FOLDER",
                         help="also draw where the model looked for each face (an occlusion map of its label) into "
                              "FOLDER as IMAGE-faceN-LABEL.png, replacing files of those names")
    predict.set_defaults(func=cmd_predict)

    video = sub.add_parser("video", help="label the faces of every frame of a video file into a new MP4")
    video.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT))
    video.add_argument("video", help="a video file (mp4, mov, webm, mkv, avi...), at most 10 minutes")
    video.add_argument("--out", help="the annotated H.264 MP4 (default: VIDEO-annotated.mp4 beside it)")
    video.add_argument("--csv", help="also write every face of every frame (time, box, probabilities) to this CSV")
    video.set_defaults(func=cmd_video)
    for command in (evaluate, compare, predict, video):
        command.add_argument("--precision", choices=PRECISIONS, default="auto",
                             help="auto (default): int8 on a CPU when the checkpoint is calibrated, else float")
        command.add_argument("--device", choices=DEVICES, default="auto",
                             help="auto (default): a CUDA GPU, then Apple's MPS, then the CPU")
        command.add_argument("--threads", type=int, help="CPU threads (0 = all cores; default: torch's choice)")

    export = sub.add_parser("export", help="export a checkpoint to TorchScript or ONNX")
    export.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT))
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--out", required=True)
    export.set_defaults(func=cmd_export)

    ship = sub.add_parser("ship", help="measure a checkpoint and write it with its model card (checkpoints/)")
    ship.add_argument("--checkpoint", required=True, help="usually RUN_DIR/best.pt")
    ship.add_argument("--data", required=True, help="the data it was trained on (for the validation report)")
    ship.add_argument("--out", default=str(SHIPPED_CHECKPOINT))
    ship.add_argument("--run", help="the run directory whose metrics.jsonl goes beside it (default: the checkpoint's)")
    ship.add_argument("--half", action="store_true",
                      help="store the weights in float16: half the file, measured as stored")
    ship.set_defaults(func=cmd_ship)

    models_cmd = sub.add_parser("models", help="list the architectures")
    models_cmd.set_defaults(func=cmd_models)

    runs = sub.add_parser("runs", help="list training runs, or ask one to stop")
    runs.add_argument("--root", default=str(runs_dir()), help=f"default: ${RUNS_DIR_ENV} or the project's runs/")
    runs.add_argument("--stop", metavar="RUN_DIR", help="ask a running run to stop after its current step")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=cmd_runs)
    return parser


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a command as Ctrl-C does: cleanly, exit 130 (training stops at a step)


def main(argv: list[str] | None = None) -> int:
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:  # the parser too: building it imports torch (Ctrl-C there) and reads $FERCORE_RUNS_DIR
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UserError as exc:
        print(f"fercore: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("fercore: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a permission problem: the environment, not a bug
        print(f"fercore: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("FERCORE_DEBUG", "") not in ("", "0"):
            raise
        print(f"fercore: internal error: {type(exc).__name__}: {exc} (set FERCORE_DEBUG=1 for details)",
              file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
