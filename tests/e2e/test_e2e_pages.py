"""The home, predict (photos) and evaluate pages in a real browser, against the finished run the app finds on disk."""
from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image
from playwright.sync_api import expect

from fercore.app import model_menu
from fercore.evaluate import evaluate
from fercore.labels import EMOTIONS
from fercore.predict import Predictor

from .e2e_helpers import (
    SLOW,
    TINY_RUN,
    choose_prediction_model,
    choose_run_checkpoint,
    navigation_problem,
    open_page,
    sidebar_lines,
)


def test_home_shows_the_runs_found_and_the_way_to_each_page(page, app_server, shoot):
    open_page(page, app_server.url)
    expect(page.get_by_role("heading", name="FER Studio")).to_be_visible()
    runs = page.get_by_test_id("stDataFrame")
    expect(runs).to_be_visible()
    expect(page.get_by_text("Training runs")).to_be_visible()
    for label in ("Train a model", "Evaluate a checkpoint", "Predict on photos or webcam"):
        expect(page.get_by_role("link", name=label)).to_be_visible()
    assert navigation_problem(sidebar_lines(page)) is None
    shoot(page, "home")


def test_predict_labels_the_faces_of_an_uploaded_photo(page, app_server, astronaut_jpeg, shoot):
    open_page(page, app_server.url, "predict")
    model = choose_prediction_model(page, app_server.runs_dir)
    page.locator("input[type=file]").first.set_input_files(
        {"name": "astronaut.jpg", "mimeType": "image/jpeg", "buffer": astronaut_jpeg})

    caption = page.get_by_text(re.compile(r"astronaut\.jpg: \d+ face\(s\)"))
    expect(caption).to_be_visible(timeout=SLOW)
    faces = int(re.search(r": (\d+) face", caption.inner_text()).group(1))
    assert faces == 1, caption.inner_text()  # one astronaut
    # each face has a probability chart titled "face 1: happy 87%": what the engine itself says of the photo
    expected = Predictor.from_checkpoint(model).predict_image(astronaut_jpeg).faces[0]
    title = page.get_by_text(re.compile(rf"face 1: {expected.label} \d{{1,3}}%")).first
    expect(title).to_be_visible(timeout=SLOW)
    percent = int(re.search(r"(\d{1,3})%", title.text_content() or "").group(1))
    assert abs(percent - 100 * expected.confidence) <= 1, (title.text_content(), expected.confidence)
    annotated = page.get_by_test_id("stImage").locator("img").first
    expect(annotated).to_be_visible()
    shown = Image.open(io.BytesIO(annotated.screenshot())).convert("RGB")
    assert np.asarray(shown).std() > 10, "the annotated photo is blank"
    page.get_by_text("Show where the model looks").first.click()
    emotion = "|".join(EMOTIONS)
    where = page.get_by_text(re.compile(rf"Where face 1 reads as ({emotion}): (hiding a red part|no one part)"))
    expect(where).to_be_visible(timeout=SLOW)
    drawn = page.get_by_test_id("stImage").locator("img").nth(1)
    expect(drawn).to_be_visible()
    assert np.asarray(Image.open(io.BytesIO(drawn.screenshot())).convert("RGB")).std() > 10, "the map is blank"
    shoot(page, "predict")


def test_predict_plays_back_a_labelled_video_file(page, app_server, tmp_path):
    from tests.test_video import write_clip

    clip = write_clip(tmp_path / "clip.mp4", frames=6).read_bytes()
    open_page(page, app_server.url, "predict")
    choose_prediction_model(page, app_server.runs_dir)
    page.get_by_role("tab", name="Video file").click()
    page.locator("input[type=file]").nth(1).set_input_files(
        {"name": "holiday.mp4", "mimeType": "video/mp4", "buffer": clip})
    expect(page.get_by_text(re.compile(r"holiday\.mp4: 6 frames, 0\.6 s at 10 frames/s"))).to_be_visible(timeout=SLOW)
    player = page.get_by_test_id("stVideo")  # not the webcam tab's hidden <video>
    expect(player).to_be_visible()
    page.wait_for_function("document.querySelector('[data-testid=stVideo]').readyState >= 2",
                           timeout=SLOW)  # the browser decodes the H.264 it was sent
    assert player.evaluate("v => [v.videoWidth, v.videoHeight]") == [320, 240]


def test_evaluate_shows_the_accuracy_of_the_chosen_checkpoint(page, app_server, shoot):
    open_page(page, app_server.url, "evaluate")
    choose_run_checkpoint(page, TINY_RUN)
    checkpoint = app_server.runs_dir / TINY_RUN / "best.pt"
    report = evaluate(checkpoint, model_menu.read_card(checkpoint)["data_source"], "test")  # the page's default
    accuracy = page.get_by_test_id("stMetric").filter(has_text="Accuracy")
    expect(accuracy.get_by_test_id("stMetricValue")).to_have_text(f"{report.accuracy:.1%}", timeout=SLOW)
    expect(page.get_by_test_id("stMetric").filter(has_text="Faces").get_by_test_id("stMetricValue")).to_have_text(
        f"{len(report.labels):,}")
    expect(page.get_by_text("Confusion", exact=True)).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=SLOW)
    shoot(page, "evaluate")


def test_a_first_visit_by_a_page_address_keeps_the_apps_navigation(page, fresh_app_server):
    """The first visitor of a fresh server opens a page by its address (a bookmark, a shared link).

    Streamlit runs an app that has a pages/ folder the old way (each script there a page of its own, no
    streamlit_app.py) until st.navigation has run once in the server process.
    """
    open_page(page, fresh_app_server.url, "evaluate")
    expect(page.get_by_role("heading", name="Evaluate")).to_be_visible()
    problem = navigation_problem(sidebar_lines(page))
    assert problem is None, (
        f"{problem}: a first visit to a page's address made Streamlit 1.67 run pages/evaluate.py as an old-style "
        "page of the pages/ folder, without streamlit_app.py (no st.navigation, no set_page_config, '_common' listed "
        "as a page), and every session does so until someone opens the app's root address. Streamlit does this "
        "for a folder named pages/ beside the main script only (PagesManager.uses_pages_directory).")
