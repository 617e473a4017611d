"""The live webcam in a real browser: Chromium's fake camera plays the astronaut photo over WebRTC, the server's
frame callback (fercore.live.LiveAnnotator) boxes and labels her face, and the labelled frames come back."""
from __future__ import annotations

import io
import re
import time

import numpy as np
from PIL import Image
from playwright.sync_api import expect

from .e2e_helpers import SLOW, choose_prediction_model, component_frame, label_colour_pixels, open_page

STATS = re.compile(r"([\d,]+) frames annotated · ([\d.]+) frames/s")
ENOUGH_FRAMES = 30
RATE_WINDOW_S = 5.0


def annotated_frames(page) -> tuple[int, float]:
    """The page's live counter: frames the server's callback has annotated, and its frames/s."""
    match = STATS.search(page.get_by_text(STATS).first.inner_text())
    assert match, "no live counter"
    return int(match.group(1).replace(",", "")), float(match.group(2))


def test_webcam_frames_come_back_labelled_by_the_server(page, app_server, fake_webcam, shoot, record_property):
    open_page(page, app_server.url, "predict")
    choose_prediction_model(page, app_server.runs_dir)
    page.get_by_role("tab", name="Live webcam").click()
    webrtc = page.frame_locator("iframe[title*='webrtc']")
    webrtc.get_by_role("button", name="Start").click()

    # the server's callback annotates frames: the page counts them (refreshed every second)
    expect(page.get_by_text(STATS).first).to_be_visible(timeout=SLOW)
    deadline = time.monotonic() + SLOW / 1000
    while annotated_frames(page)[0] < ENOUGH_FRAMES and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    frames, _ = annotated_frames(page)
    assert frames >= ENOUGH_FRAMES, f"only {frames} frames annotated in {SLOW / 1000:.0f} s"

    # how fast: the callback's own meter, its count over a window, and the frames the browser's video shows
    started, first = time.monotonic(), annotated_frames(page)[0]
    video = component_frame(page, "webrtc")
    shown_per_s = video.evaluate("""async ms => {
        const v = document.querySelector('video'), before = v.getVideoPlaybackQuality().totalVideoFrames;
        await new Promise(done => setTimeout(done, ms));
        return (v.getVideoPlaybackQuality().totalVideoFrames - before) * 1000 / ms; }""", RATE_WINDOW_S * 1000)
    last, meter = annotated_frames(page)
    counted_per_s = (last - first) / (time.monotonic() - started)
    for name, value in (("callback_meter_fps", meter), ("callback_counted_fps", counted_per_s),
                        ("browser_shown_fps", shown_per_s)):
        record_property(name, round(value, 1))
    print(f"\nlive webcam 640x480 (source 30 frames/s): callback meter {meter:.1f} frames/s, "
          f"counted {counted_per_s:.1f} frames/s, browser shows {shown_per_s:.1f} frames/s")
    assert last > first, "the callback stopped annotating"

    # the frames that come back carry a label box in an emotion's colour that the plain clip does not have
    element = webrtc.locator("video")
    expect(element).to_be_visible()
    shown = np.asarray(Image.open(io.BytesIO(element.screenshot())).convert("RGB"))
    plain = fake_webcam[1]
    shown_share = {k: v / shown[..., 0].size for k, v in label_colour_pixels(shown).items()}
    plain_share = {k: v / plain[..., 0].size for k, v in label_colour_pixels(plain).items()}
    gain = {k: shown_share[k] - plain_share[k] for k in shown_share}
    assert max(gain.values()) > 0.004, f"no label colour drawn on the video: {gain}"
    shoot(page, "webcam")

    webrtc.get_by_role("button", name="Stop").click()
    expect(page.get_by_text(STATS)).to_have_count(0, timeout=SLOW)
