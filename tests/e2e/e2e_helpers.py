"""What the browser tests share beyond fixtures: a fake webcam file, waiting for Streamlit, pickers, screenshots."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import Frame, Locator, Page, expect

from fercore.labels import COLORS, EMOTIONS
from fercore.paths import SHIPPED_CHECKPOINT

LABEL = re.compile(rf"\b({'|'.join(EMOTIONS)}) \d{{1,3}}%")  # how a face's label reads: "happy 87%"
TINY_RUN = "e2e-tiny"  # the finished run the app finds on disk: the tiny_checkpoint model and its metrics
SLOW = 90_000  # ms: a generous wait for work on a busy two-core machine (model loads, evaluation, training start)


# ---------------------------------------------------------------- the fake webcam
def write_y4m(path: Path, photo_jpeg: bytes, width: int = 640, height: int = 480, frames: int = 30,
              fps: int = 30) -> np.ndarray:
    """Write a YUV4MPEG2 (C420jpeg) clip for Chromium's fake camera: the photo, scaled to fit, centred on grey.

    Returns the RGB frame the clip shows (what the video would look like without annotations).
    """
    photo = Image.open(io.BytesIO(photo_jpeg)).convert("RGB")
    side = min(width, height) - 32  # keep a grey margin round the photo
    photo.thumbnail((side, side), Image.LANCZOS)
    canvas = Image.new("RGB", (width, height), (128, 128, 128))
    canvas.paste(photo, ((width - photo.width) // 2, (height - photo.height) // 2))
    y, cb, cr = canvas.convert("YCbCr").split()  # PIL's YCbCr is JPEG's full-range BT.601: C420jpeg
    half = (width // 2, height // 2)
    planes = [np.asarray(y), np.asarray(cb.resize(half, Image.BOX)), np.asarray(cr.resize(half, Image.BOX))]
    frame = b"FRAME\n" + b"".join(p.astype(np.uint8).tobytes() for p in planes)
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        out.writelines(frame for _ in range(frames))
    return np.asarray(canvas)


def label_colour_pixels(rgb: np.ndarray, tolerance: int = 40) -> dict[str, int]:
    """How many pixels of the image lie within tolerance (per channel) of each emotion's label colour."""
    counts = {}
    for emotion, hex_colour in COLORS.items():
        colour = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        counts[emotion] = int((np.abs(rgb[..., :3].astype(int) - colour).max(axis=-1) <= tolerance).sum())
    return counts


# ---------------------------------------------------------------- driving Streamlit
APP_PAGES = ("Home", "Train", "Evaluate", "Predict")  # the sidebar navigation of streamlit_app.py


def sidebar_lines(page: Page) -> list[str]:
    """The lines of the sidebar navigation (page titles, and the names of their icons)."""
    return [line.strip() for line in page.get_by_test_id("stSidebarNav").inner_text().splitlines() if line.strip()]


def navigation_problem(lines: list[str]) -> str | None:
    """What is wrong with sidebar lines that should list the app's pages, or None."""
    titles = [line for line in lines if line[:1].isupper()]  # icon names are lower case: "home", "mood"
    if titles != list(APP_PAGES):
        return f"the sidebar lists {lines} instead of the pages {list(APP_PAGES)}"
    return None


def wait_for_app(page: Page, timeout: float = SLOW) -> None:
    """Wait until the app is connected and its script has finished a run (fragments may rerun later)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", state="attached",
                           timeout=timeout)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached",
                           timeout=timeout)


def open_page(page: Page, base_url: str, path: str = "") -> None:
    page.goto(f"{base_url}/{path}")
    wait_for_app(page)


def choose(page: Page, label: str, option: str | re.Pattern[str]) -> None:
    """Pick the option (its text, or a pattern of it) in the selectbox with this label, then wait for the rerun."""
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
    box.click()
    page.get_by_role("option", name=option).first.click()
    wait_for_app(page)


def choose_run_checkpoint(page: Page, run: str) -> None:
    """Pick a run's best.pt in the checkpoint picker ("Model"): tests name their checkpoint, not 'the newest'."""
    choose(page, "Model", re.compile(rf"^{re.escape(run)} · best"))
    expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile(rf"^{re.escape(run)} · best"))


def choose_prediction_model(page: Page, runs_dir: Path) -> Path:
    """For Predict: the shipped model when checkpoints/fer2013.pt exists (its labels mean something, and the README's
    screenshots show it), otherwise the tiny run's best.pt (in runs_dir); returns the checkpoint chosen."""
    if SHIPPED_CHECKPOINT.is_file():
        choose(page, "Model", re.compile(r"^shipped model"))
        expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile(r"^shipped model"))
        return SHIPPED_CHECKPOINT
    choose_run_checkpoint(page, TINY_RUN)
    return runs_dir / TINY_RUN / "best.pt"


def set_number(page: Page, label: str, value: float) -> None:
    """Type a value into the number input with this label and commit it (Enter), then wait for the rerun."""
    field = page.get_by_test_id("stNumberInput").filter(has=page.get_by_text(label, exact=True)).locator("input")
    field.fill(str(value))
    field.press("Enter")
    expect(field).to_have_value(str(value))
    wait_for_app(page)


def component_frame(page: Page, title_part: str) -> Frame:
    """The Frame of a custom component's iframe (for evaluating scripts inside it)."""
    handle = page.locator(f"iframe[title*='{title_part}']").element_handle(timeout=SLOW)
    frame = handle.content_frame()
    assert frame is not None, f"the {title_part} component's iframe has no frame"
    return frame


def screenshot(page: Page, path: Path, target: Locator | None = None, max_height: int = 1800) -> Path:
    """Save a screenshot of the whole page (the viewport grown to the content's height) or of one element.

    Streamlit scrolls its main area, not the document, so a 'full page' screenshot needs a taller viewport.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if target is not None:
        target.screenshot(path=path)
        return path
    viewport = page.viewport_size or {"width": 1280, "height": 900}
    height = page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                           " return m ? m.scrollHeight : document.body.scrollHeight; }")
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], min(height, max_height))})
    try:
        page.wait_for_timeout(500)  # charts re-lay themselves out to the new size
        page.screenshot(path=path)
    finally:
        page.set_viewport_size(viewport)
    return path
