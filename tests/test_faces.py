"""Face detection on scikit-image's astronaut photo, and the FER2013 crop box."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from skimage import data as skimage_data

from fercore.faces import FaceBox, FaceDetector, fer_crop_box, load_detector

# Where the astronaut's face is in the 512x512 photo (brow to chin, cheek to cheek), checked by eye.
FACE_BOX = FaceBox(180, 64, 86, 108, 1.0)


def iou(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes."""
    iw = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    ih = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return iw * ih / (a.w * a.h + b.w * b.h - iw * ih)


def inside(box: FaceBox, image: np.ndarray) -> bool:
    """Whether a box is non-empty and lies within the image."""
    height, width = image.shape[:2]
    return box.w > 0 and box.h > 0 and box.x >= 0 and box.y >= 0 and box.x + box.w <= width and box.y + box.h <= height


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return load_detector()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


def test_astronaut_has_one_face_where_it_is(detector: FaceDetector, astronaut: np.ndarray) -> None:
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    assert iou(faces[0], FACE_BOX) > 0.6
    assert iou(faces[0], FaceBox(170, 20, 80, 90, 1.0)) > 0  # the top of the head
    assert 0.9 < faces[0].score <= 1.0


def test_grayscale_as_rgb_works(detector: FaceDetector, astronaut: np.ndarray) -> None:
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    faces = detector.detect(np.dstack([gray, gray, gray]))
    assert len(faces) == 1
    assert iou(faces[0], FACE_BOX) > 0.6


def test_blank_and_noise_images_have_no_faces(detector: FaceDetector) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for image in (np.zeros((480, 640, 3), np.uint8), np.full((480, 640, 3), 255, np.uint8), noise):
        assert detector.detect(image) == []


def test_images_smaller_than_min_face_have_no_faces(detector: FaceDetector) -> None:
    assert detector.detect(np.zeros((30, 500, 3), np.uint8)) == []


@pytest.mark.parametrize(("rows", "cols", "corner"), [
    (slice(80, 380), slice(190, 490), "top-left"),  # face cut by the top and left edges
    (slice(0, 160), slice(0, 250), "bottom-right"),  # chin and cheek cut off
])
def test_faces_at_the_edge_are_clipped(
    detector: FaceDetector, astronaut: np.ndarray, rows: slice, cols: slice, corner: str
) -> None:
    image = np.ascontiguousarray(astronaut[rows, cols])
    faces = detector.detect(image)
    assert faces and all(inside(face, image) for face in faces)
    face, (height, width) = faces[0], image.shape[:2]
    if corner == "top-left":
        assert (face.x, face.y) == (0, 0)
    else:
        assert (face.x + face.w, face.y + face.h) == (width, height)


def test_faces_come_best_first(detector: FaceDetector, astronaut: np.ndarray) -> None:
    scene = np.zeros((512, 1024, 3), np.uint8)
    scene[:, :512] = astronaut
    scene[100:356, 600:856] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    faces = detector.detect(scene)
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score
    assert sorted(face.x < 512 for face in faces) == [False, True]


def test_bad_input_is_refused(detector: FaceDetector) -> None:
    for bad in (np.zeros((64, 64), np.uint8), np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 4), np.uint8)):
        with pytest.raises(ValueError):
            detector.detect(bad)


@pytest.mark.parametrize("box", [
    FaceBox(180, 64, 86, 108, 0.99),  # well inside
    FaceBox(0, 0, 60, 80, 0.99),  # top-left corner
    FaceBox(450, 420, 62, 92, 0.99),  # bottom-right corner
    FaceBox(0, 0, 512, 512, 0.99),  # as large as the image
    FaceBox(10, 5, 1, 1, 0.99),  # tiny
])
def test_fer_crop_box_is_a_square_inside_the_image(box: FaceBox) -> None:
    x, y, w, h = fer_crop_box(box, 512, 512)
    assert w == h > 0
    assert 0 <= x and 0 <= y and x + w <= 512 and y + h <= 512


def test_fer_crop_box_frames_the_face(astronaut: np.ndarray, detector: FaceDetector) -> None:
    face = detector.detect(astronaut)[0]
    x, y, w, h = fer_crop_box(face, 512, 512)
    assert face.w < w < 1.5 * face.h
    assert x < face.x + face.w / 2 < x + w and y < face.y + face.h / 2 < y + h


def test_fer_crop_box_in_a_narrow_image() -> None:
    assert fer_crop_box(FaceBox(5, 100, 40, 50, 0.9), 30, 300)[2:] == (30, 30)


def test_one_detector_serves_several_threads(detector: FaceDetector, astronaut: np.ndarray) -> None:
    expected = detector.detect(astronaut)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(detector.detect, [astronaut] * 8))
    assert all(result == expected for result in results)


def test_load_detector_is_cached() -> None:
    assert load_detector() is load_detector()
