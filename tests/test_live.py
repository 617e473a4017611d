"""LiveAnnotator on real frames (scikit-image's astronaut), as a plain function: no browser, no WebRTC."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.data import astronaut

from fercore.live import FpsMeter, LiveAnnotator, frames_to_annotate, iou
from fercore.predict import Predictor


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint)


@pytest.fixture
def detections(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size (h, w) of each frame the face detector was run on."""
    calls: list[tuple[int, int]] = []
    detect = predictor.detector.detect

    def counting_detect(rgb: np.ndarray):
        calls.append(rgb.shape[:2])
        return detect(rgb)
    monkeypatch.setattr(predictor.detector, "detect", counting_detect)
    return calls


def shifted(frame: np.ndarray, dx: int) -> np.ndarray:
    """The frame moved dx pixels to the right (edge pixels repeated)."""
    return np.concatenate([np.repeat(frame[:, :1], dx, axis=1), frame[:, :-dx]], axis=1) if dx else frame


def test_a_frame_comes_back_annotated_with_the_face(predictor: Predictor) -> None:
    frame = astronaut()
    annotator = LiveAnnotator(predictor)
    out = annotator.process(frame)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert not np.array_equal(out, frame)
    assert np.array_equal(frame, astronaut())  # the input is left alone
    [track] = annotator.tracks
    assert iou(track.box, predictor.predict_array(frame)[0].box) > 0.8  # found on the half-size copy


def test_detects_every_nth_frame_on_a_smaller_copy_and_reuses_boxes_between(
        predictor: Predictor, detections: list[tuple[int, int]]) -> None:
    annotator = LiveAnnotator(predictor, detect_every=3, detect_scale=0.5)
    for _ in range(7):
        annotator.process(astronaut())
    assert detections == [(256, 256)] * 3  # frames 0, 3 and 6, at half of 512x512
    assert annotator.frames == 7 and len(annotator.tracks) == 1


def test_a_face_that_moves_a_little_keeps_its_track_and_smoothing_window(predictor: Predictor) -> None:
    annotator = LiveAnnotator(predictor, detect_every=1, smoothing=3)
    annotator.process(astronaut())
    track = annotator.tracks[0]
    for dx in (4, 8, 12, 16):
        annotator.process(shifted(astronaut(), dx))
    assert annotator.tracks == [track] and len(track.history) == 3
    smoothed = annotator._smoothed(track)
    assert smoothed.probabilities == pytest.approx(dict(zip(predictor.classes, np.mean(track.history, axis=0))))
    assert smoothed.label == max(smoothed.probabilities, key=smoothed.probabilities.get)


def test_a_frame_without_a_face_drops_the_tracks(predictor: Predictor) -> None:
    annotator = LiveAnnotator(predictor, detect_every=1)
    annotator.process(astronaut())
    blank = np.full_like(astronaut(), 128)
    out = annotator.process(blank)
    assert annotator.tracks == []
    assert np.array_equal(out[100:], blank[100:])  # nothing drawn below the frame-rate note


def test_settings_are_checked(predictor: Predictor) -> None:
    for bad in (dict(detect_every=0), dict(detect_scale=0), dict(detect_scale=1.5), dict(smoothing=0)):
        with pytest.raises(ValueError):
            LiveAnnotator(predictor, **bad)


def test_fps_meter_counts_frames_over_the_time_they_took() -> None:
    ticks = iter([0.0, 0.01, 0.2, 0.21, 0.4])  # uneven intervals: 4 frames in 0.4 s
    meter = FpsMeter(window=30, clock=lambda: next(ticks))
    assert meter.tick() == 0.0
    for _ in range(4):
        meter.tick()
    assert meter.fps == pytest.approx(10.0)  # not the mean of 1/interval (about 52)


def test_fps_meter_forgets_old_frames() -> None:
    ticks = iter([0.0, 1.0, 1.1, 1.2])
    meter = FpsMeter(window=3, clock=lambda: next(ticks))
    for _ in range(4):
        meter.tick()
    assert meter.fps == pytest.approx(10.0)


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_a_queue_is_annotated_whole_until_it_backs_up() -> None:
    assert frames_to_annotate(["a"]) == ["a"]
    assert frames_to_annotate(["a", "b", "c"]) == ["a", "b", "c"]
    assert frames_to_annotate(["a", "b", "c", "d", "e"]) == ["c", "d", "e"]
    assert frames_to_annotate(["a", "b", "c"], limit=1) == ["c"]
