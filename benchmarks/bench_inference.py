"""Inference through fercore, each against a plain baseline timed in the same run: faces, photos, webcam frames,
evaluation, and the peak memory of a prediction process. The model is loaded once per process.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from bench_detectors import make_scenes
from harness import Interleaved, Row, run_timed

from fercore import models
from fercore.checkpoint import LoadedModel, load_model, make_checkpoint, save_checkpoint
from fercore.data import FaceSet, load_data
from fercore.data.images import downscale, open_image
from fercore.draw import annotate
from fercore.evaluate import evaluate_faces
from fercore.explain import occlusion_maps
from fercore.inference import to_input
from fercore.labels import EMOTIONS
from fercore.live import LiveAnnotator
from fercore.predict import Predictor
from fercore.video import TICK, annotate_video, h264_stream

BATCH = 64
HAAR = "decode + OpenCV Haar frontal (1.1, 5)"
PLAIN_BATCH = f"plain float32 model(x), batch of {BATCH} faces"
PLAIN_ONE = "plain float32 model(x), 1 face"
NAIVE_CALLBACK = "naive callback: predict_array + annotate, every frame"
BARE_TORCH = "python -c 'import torch' (whole process)"


def checkpoint_or_untrained(path: Path, work: Path) -> tuple[Path, str]:
    """The checkpoint, or where it is missing an untrained fernet saved in work (inference takes as long)."""
    if path.is_file():
        return path, str(path)
    untrained = work / "untrained-fernet.pt"
    save_checkpoint(untrained, make_checkpoint(models.build("fernet"), "fernet", {}, EMOTIONS, 0.5, 0.25, tta=True))
    return untrained, f"untrained fernet with TTA ({path.name} missing)"


def jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


@torch.inference_mode()
def plain_forward(predictor: Predictor, faces: np.ndarray) -> torch.Tensor:
    """What a seed project does: the float32 model on the batch, no autocast, no mirrored pass."""
    lm = predictor.loaded
    return lm.model(to_input(torch.from_numpy(faces), lm.mean, lm.std)).softmax(1)


def face_rows(predictor: Predictor, faces: np.ndarray, samples: int) -> list[Row]:
    """Section 2: milliseconds per face through Predictor.classify, a batch and a single face."""
    tta = f"TTA {'on' if predictor.loaded.tta else 'off'}, {predictor.loaded.dtype}"
    cases = [  # name, action on a batch, faces per call, baseline
        (PLAIN_BATCH, lambda b: plain_forward(predictor, b), BATCH, PLAIN_BATCH),
        (f"Predictor.classify, batch of {BATCH} faces", predictor.classify, BATCH, PLAIN_BATCH),
        (PLAIN_ONE, lambda b: plain_forward(predictor, b[:1]), 1, PLAIN_ONE),
        ("Predictor.classify, 1 face", lambda b: predictor.classify(b[:1]), 1, PLAIN_ONE),
        ("occlusion map of 1 face (fercore.explain)", lambda b: occlusion_maps(predictor.loaded, b[0]), 1,
         "Predictor.classify, 1 face"),
    ]
    timing = Interleaved()
    batches = [faces.take(np.arange(i * BATCH, (i + 1) * BATCH), axis=0, mode="wrap") for i in range(samples)]
    timing.run({name: action for name, action, _, _ in cases}, batches)
    return [Row(2, name, [ms / per for ms in timing.samples[name]], "ms/face", baseline,
                "" if name == baseline else tta) for name, _, per, baseline in cases]


def photo_rows(predictor: Predictor, photos: list[bytes]) -> list[Row]:
    """Section 2: a 640x480 JPEG with one face: decode + detect (+ classify), fercore against OpenCV's Haar cascade."""
    haar = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def haar_faces(data: bytes) -> int:
        return len(haar.detectMultiScale(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE), 1.1, 5))

    def fercore_faces(data: bytes) -> int:  # decoded exactly as Predictor.predict_image decodes
        return len(predictor.detector.detect(np.asarray(downscale(open_image(data))[0].convert("RGB"))))

    def predicted_faces(data: bytes) -> int:
        result = predictor.predict_image(data)
        return 0 if result.no_face_found else len(result.faces)

    actions: dict[str, Callable[[bytes], int]] = {
        HAAR: haar_faces, "decode + fercore FaceDetector": fercore_faces,
        "Predictor.predict_image: decode + detect + classify": predicted_faces}
    timing = Interleaved()
    timing.run(actions, photos)
    rows = [Row(2, name, values, "ms/photo", HAAR,
                f"face found in {sum(n > 0 for n in timing.results[name])}/{len(photos)}")
            for name, values in timing.samples.items()]
    detect_ms = statistics.median(timing.samples["decode + fercore FaceDetector"])
    rows[-1].note += f"; {rows[-1].value / detect_ms:.2f}x decode + detect alone"
    return rows


def moving_frames(scene: np.ndarray, count: int) -> Iterator[np.ndarray]:
    """The scene panned back and forth once (40 px sideways, 10 px up and down), like a webcam on a seated person."""
    for t in range(count):
        phase = 2 * math.pi * t / count
        yield np.roll(scene, (round(10 * math.sin(2 * phase)), round(40 * math.sin(phase))), axis=(0, 1))


def stream_fps(callback: Callable[[np.ndarray], int], scene: np.ndarray, count: int) -> tuple[float, int]:
    """Frames per second of a callback over the moving scene, and the number of frames it showed a face on."""
    seconds, with_face = 0.0, 0
    for frame in moving_frames(scene, count):
        start = time.perf_counter()
        with_face += callback(frame) > 0
        seconds += time.perf_counter() - start
    return count / seconds, with_face


def webcam_rows(predictor: Predictor, scene: np.ndarray, frames: int, repeats: int) -> list[Row]:
    """Section 3: 640x480 frames through fercore.live.LiveAnnotator against detecting on every frame."""

    def naive(frame: np.ndarray) -> int:
        faces = predictor.predict_array(frame)
        annotate(frame, faces)
        return len(faces)

    def live() -> Callable[[np.ndarray], int]:
        annotator = LiveAnnotator(predictor)  # a new stream: no faces remembered

        def process(frame: np.ndarray) -> int:
            annotator.process(frame)
            return len(annotator.tracks)
        return process

    name = "LiveAnnotator.process (defaults: detect every 3rd frame at 0.5 scale)"
    fps: dict[str, list[float]] = {NAIVE_CALLBACK: [], name: []}
    shown: dict[str, int] = {}
    for _ in range(repeats):
        for key, callback in ((NAIVE_CALLBACK, naive), (name, live())):
            value, shown[key] = stream_fps(callback, scene, frames)
            fps[key].append(value)
    return [Row(3, key, values, "frames/s", NAIVE_CALLBACK, f"{frames} frames, face shown on {shown[key]}")
            for key, values in fps.items()]


def video_rows(predictor: Predictor, scene: np.ndarray, frames: int, repeats: int, work: Path) -> list[Row]:
    """Section 3: a 640x480 clip of the moving scene (30 frames/s, MPEG-4) through fercore.video.annotate_video
    against decoding it and encoding it again as H.264 alone, with the same encoder settings."""
    clip = work / "scene.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = scene.shape[1], scene.shape[0], "yuv420p"
        for frame in moving_frames(scene, frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        out.mux(stream.encode(None))

    def transcode() -> None:
        with av.open(str(clip)) as source, av.open(str(work / "plain.mp4"), "w") as output:
            encoder = h264_stream(output, Fraction(30), scene.shape[1], scene.shape[0])
            for number, frame in enumerate(source.decode(video=0)):
                drawn = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
                drawn.pts, drawn.time_base = round(number / 30 / TICK), TICK
                output.mux(encoder.encode(drawn))
            output.mux(encoder.encode(None))

    plain, name = "decode + H.264 encode alone (the same clip and encoder settings)", "video.annotate_video, 640x480"
    fps: dict[str, list[float]] = {plain: [], name: []}
    labelled = 0
    for _ in range(repeats):
        start = time.perf_counter()
        transcode()
        fps[plain].append(frames / (time.perf_counter() - start))
        start = time.perf_counter()
        result = annotate_video(clip, work / "annotated.mp4", predictor)
        fps[name].append(frames / (time.perf_counter() - start))
        labelled = sum(1 for faces in result.faces if faces)
    return [Row(3, plain, fps[plain], "frames/s"),
            Row(3, name, fps[name], "frames/s", plain, f"{frames} frames, a face labelled on {labelled}")]


def evaluation_rows(checkpoint: Path, faces: FaceSet, repeats: int) -> list[Row]:
    """Section 4: fercore.evaluate.evaluate_faces on the faces, int8 against float (bf16 autocast where the CPU has
    it) with the same TTA setting, for the checkpoint's TTA setting and without."""
    n = f"{len(faces):,} faces"
    as_float, as_int8 = (load_model(checkpoint, precision=precision) for precision in ("float", "auto"))
    runs = [as_float] if as_int8.dtype == as_float.dtype else [as_float, as_int8]  # uncalibrated: float only

    def row_name(loaded: LoadedModel, tta: bool) -> str:
        return f"evaluate_faces, {n}, {loaded.dtype}, TTA {'on' if tta else 'off'}"
    variants = {row_name(loaded, tta): (loaded, tta) for loaded in runs for tta in (False, as_float.tta)}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (loaded, tta) in variants.items():
            start = time.perf_counter()
            evaluate_faces(loaded, faces, tta)
            seconds[name].append(time.perf_counter() - start)
    return [Row(4, row, values, "s", None if variants[row][0] is as_float else row_name(as_float, variants[row][1]))
            for row, values in seconds.items()]


def process_rows(checkpoint: Path, photo: Path, repeats: int) -> list[Row]:
    """Sections 2 and 6: `python -m fercore predict` on one photo as a whole process, against importing torch."""
    commands = {BARE_TORCH: [sys.executable, "-c", "import torch"],
                "python -m fercore predict, one photo (whole process)":
                    [sys.executable, "-m", "fercore", "predict", "--checkpoint", str(checkpoint), str(photo)]}
    runs = {name: [run_timed(command) for _ in range(repeats)] for name, command in commands.items()}
    rows = []
    for name, done in runs.items():
        rows.append(Row(2, name, [d.seconds for d in done], "s", BARE_TORCH,
                        "" if name == BARE_TORCH else "torch threads: the CLI's default"))
        rows.append(Row(6, f"{name}: peak RSS", [d.max_rss_mb for d in done], "MiB", f"{BARE_TORCH}: peak RSS"))
    return rows


def inference_rows(data: Path, checkpoint: Path, work: Path, photos: int, frames: int, eval_faces: int,
                   repeats: int) -> list[Row]:
    """Sections 2, 3 (webcam and video files), 4 and the prediction half of 6, for the checkpoint at hand."""
    predictor = Predictor.from_checkpoint(checkpoint)
    every = load_data(data).split("all", predictor.classes)
    pick = np.arange(eval_faces) % len(every)  # the data's faces, repeated where it has fewer
    faces = FaceSet(every.images[pick], every.labels[pick], every.classes)
    scenes = [scene for scene, _ in make_scenes(data, photos, seed=0)]
    encoded = [jpeg(scene) for scene in scenes]
    found = next((i for i, p in enumerate(encoded) if not predictor.predict_image(p).no_face_found), 0)
    photo = work / "photo.jpg"  # one whose face is found, for the CLI and the webcam
    photo.write_bytes(encoded[found])
    return [*face_rows(predictor, faces.images, photos), *photo_rows(predictor, encoded),
            *process_rows(checkpoint, photo, repeats), *webcam_rows(predictor, scenes[found], frames, repeats),
            *video_rows(predictor, scenes[found], frames, repeats, work), *evaluation_rows(checkpoint, faces, repeats)]
