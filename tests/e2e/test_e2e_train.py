"""Train in a real browser: start a run on the synthetic demo faces, watch its curves grow, reload, stop it,
resume it."""
from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from .e2e_helpers import SLOW, open_page, set_number, wait_for_app

RUN = "e2e-train"
FACES = 700  # the smallest step of the synthetic source: about ten training steps per epoch
EPOCHS = 100  # far more than the test waits for: it stops the run itself, twice


CURVES = f".st-key-curves-{RUN} .js-plotly-plot"  # the live panel's chart (two for a moment while it refreshes)
REACH_JS = """selector => Math.max(0, ...Array.from(document.querySelectorAll(selector)).flatMap(
    el => (el.data || []).flatMap(trace => Array.from(trace.x || []))))"""


def curve_reach(page: Page) -> float:
    """How far (in epochs) the live training curves reach: the largest x of any trace, 0 with no chart yet."""
    return page.evaluate(REACH_JS, CURVES)


def wait_for_curve_beyond(page: Page, reach: float, timeout_s: float = 90) -> float:
    """Wait until the curves reach further than reach (the panel refreshes every 2 s); returns the new reach."""
    page.wait_for_function(f"([selector, reach]) => ({REACH_JS})(selector) > reach", arg=[CURVES, reach],
                           timeout=timeout_s * 1000, polling=500)
    return curve_reach(page)


def progress_text(page: Page) -> str:
    return page.get_by_test_id("stProgress").first.inner_text()


def test_train_start_watch_stop_resume(page, app_server, shoot):
    open_page(page, app_server.url, "train")
    expect(page.get_by_role("radio", name="Built-in synthetic demo faces")).to_be_checked()
    set_number(page, "Number of synthetic faces (7 expressions, balanced)", FACES)
    expect(page.get_by_text(re.compile(r"[\d,]+ training faces")).first).to_be_visible(timeout=SLOW)
    set_number(page, "Epochs", EPOCHS)
    page.get_by_label("Run name").fill(RUN)
    page.get_by_label("Run name").press("Enter")
    page.get_by_role("button", name="Start training").click()

    # running: the progress line and the curves move on between two reads
    expect(page.get_by_test_id("stProgress").first).to_contain_text("running", timeout=SLOW)
    first_text, first_reach = progress_text(page), wait_for_curve_beyond(page, 0)
    second_reach = wait_for_curve_beyond(page, first_reach)
    assert second_reach > first_reach > 0
    expect(page.get_by_test_id("stProgress").first).not_to_have_text(first_text, timeout=SLOW)
    shoot(page, "train")

    # a reload while it trains (a new session) opens on the live run, whose panel goes on refreshing itself
    page.reload()
    wait_for_app(page)
    expect(page.get_by_test_id("stProgress").first).to_contain_text("running", timeout=SLOW)
    wait_for_curve_beyond(page, curve_reach(page))

    # Stop: the run saves its position and ends as 'stopped', with a Resume button
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_test_id("stProgress").first).to_contain_text("stopped", timeout=SLOW)
    resume = page.get_by_role("button", name="Resume")
    expect(resume).to_be_visible(timeout=SLOW)
    stopped_reach = curve_reach(page)
    assert stopped_reach >= second_reach

    # Resume: running again from where it stopped, its curves going on past that point
    resume.click()
    expect(page.get_by_test_id("stProgress").first).to_contain_text("running", timeout=SLOW)
    assert wait_for_curve_beyond(page, stopped_reach) > stopped_reach
    expect(page.get_by_role("button", name="Stop")).to_be_visible()

    # leave nothing training behind: stop it again
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_test_id("stProgress").first).to_contain_text("stopped", timeout=SLOW)
