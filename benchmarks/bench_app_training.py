"""App-launched training against the CLI: images/s of the same training run started from a shell, alone, and started
the app's way while the app's server runs and a browser watches the run live.

The app launches `python -m fercore train --config RUN/launch.json --run-dir RUN --threads T`, with passive OpenMP
waiting, through `fercore.app.launcher.start_training`, with T = `training_threads()`: every usable core that no
active run holds.
Here each variant runs one recipe (the shipped `fer2013` preset, one epoch) on the same data:

- *CLI alone*: `python -m fercore train --config SAME.json --run-dir RUN --threads T` (the app's command, OpenMP
  waiting as it defaults), with nothing else running, for T = cores - 1, every core and the app's own choice;
- *app-launched*: `launcher.start_training` itself (its `training_threads` replaced for each T), while
  `streamlit run streamlit_app.py` serves the app and a headless Chromium (Debian's, as the browser tests start it)
  keeps the Train page's Live tab open on that run; the tab reruns its panel (progress, curves) every 2 s.

Speed comes from the run's own metrics.jsonl: each progress record (about one a second) holds the step and the
images/s since the epoch began, so the images and training-loop seconds up to it follow, and the speed over a window
is their difference from the first record after the warm-up (the first WARMUP_S of progress and, for the app, until
the browser shows the run's live panel) to the first record a full window later; then the run is asked to stop
(it saves last.pt and exits). An epoch that ends sooner ends the window.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from bench_app import streamlit_server, wait_for_first_page
from harness import ROOT, Row

from fercore import paths
from fercore.app import launcher, settings
from fercore.atomic import atomic_write_json
from fercore.config import TrainConfig, preset
from fercore.data import load_data
from fercore.hardware import usable_cores
from fercore.runs import RunDir, pid_alive

SECTION = 8
PRESET = "fer2013"  # the shipped recipe: fernet, batch 128, SGD, one-cycle, the full augmentation
WARMUP_S = 5.0  # progress seconds left out at the start of each run (first steps, allocator, caches)
START_TIMEOUT_S = 240.0  # from launch to the first progress record (imports, data, model)
STOP_TIMEOUT_S = 60.0  # from the stop request to the process's end
BUSY_CORES = 0.3  # "everything else" above this during a CLI run: it did not run alone (flagged in its note)
PAGE_TIMEOUT_S = 90.0  # the page's load, and until it shows the run running
CHROMIUM = os.environ.get("FERCORE_CHROMIUM", "/usr/bin/chromium")
# as tests/e2e/conftest.py starts it, without the fake webcam
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
Wait = Callable[[float], None]


@dataclass
class Speed:
    """Images/s of one run over its measured window, from its metrics.jsonl progress records."""

    images_per_s: float
    steps: int  # steps inside the window
    seconds: float  # training-loop seconds of the window
    whole: float  # the run's own images/s at the window's end (since the epoch began: warm-up included)
    training_cores: float = 0.0  # CPU the training process used over about the window, in cores
    other_cores: float = 0.0  # CPU everything else used (server, browser, this harness, anything else running)


@dataclass(frozen=True)
class Variant:
    name: str
    threads: int
    app: bool


def recipe(data: str) -> TrainConfig:
    """The shipped preset for one epoch on data."""
    return preset(PRESET, data=data, epochs=1)


def speed(run: RunDir, since: float, until: float = math.inf) -> tuple[Speed | None, float | None]:
    """The speed from the first progress record at or after `since` (wall time) to the last one up to `until`, and
    that first record's time (None, None while there is none). Images = step x batch and seconds = images /
    images_per_s, so images/s = (step_b - step_a) / (step_b / ips_b - step_a / ips_a): the batch size cancels."""
    records = [r for r in run.metrics() if r.get("type") == "progress" and r.get("epoch") == 1 and r["time"] <= until]
    first = next((r for r in records if r["time"] >= since), None)
    if first is None:
        return None, None
    last = records[-1]
    steps = last["step"] - first["step"]
    seconds_per_image = last["step"] / last["images_per_s"] - first["step"] / first["images_per_s"]  # x batch
    if steps <= 0 or seconds_per_image <= 0:
        return None, first["time"]
    batch = int(run.config().get("batch_size") or 1)  # the run's config.json, written before its first step
    return Speed(steps / seconds_per_image, steps, seconds_per_image * batch, last["images_per_s"]), first["time"]


def cpu_jiffies(pid: int | None) -> tuple[float, int, int]:
    """(monotonic seconds, CPU ticks every core spent busy, ticks the process pid spent), from /proc."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal: not idle, iowait
    own = 0
    with contextlib.suppress(OSError, TypeError, ValueError):
        with open(f"/proc/{pid}/stat") as handle:
            own = sum(int(v) for v in handle.read().rsplit(")", 1)[1].split()[11:13])  # utime, stime
    return time.monotonic(), busy, own


def cores_used(before: tuple[float, int, int], after: tuple[float, int, int]) -> tuple[float, float]:
    """(cores the process used, cores everything else used) between two cpu_jiffies samples."""
    ticks = os.sysconf("SC_CLK_TCK") * max(1e-9, after[0] - before[0])
    own = (after[2] - before[2]) / ticks
    return own, (after[1] - before[1]) / ticks - own


def follow(run: RunDir, window_s: float, wait: Wait, ready_at: float = 0.0) -> Speed:
    """Watch a launched run: measure from WARMUP_S after its first progress record (and not before ready_at) for
    window_s of wall time, then ask it to stop and wait for its end; its speed over that window, and the CPU it
    and everything else used over about the same time."""
    launched = time.time()
    pid = run.status_raw().get("pid")
    start = first_time = cpu_start = None
    until = math.inf  # the last record of the window, when the window (not the epoch) ends it
    while True:
        records = [r for r in run.metrics() if r.get("type") == "progress"]
        state = run.status().get("state")
        if start is None and records:
            start = max(records[0]["time"] + WARMUP_S, ready_at)
        if start is None and time.time() - launched > START_TIMEOUT_S:
            raise RuntimeError(f"run {run.name}: no progress after {START_TIMEOUT_S:.0f} s (state {state})")
        if start is not None and first_time is None:
            _, first_time = speed(run, start)
            cpu_start = cpu_jiffies(pid) if first_time is not None else None
        if state not in ("starting", "running"):
            break  # the epoch ended (or the run failed: checked below)
        if first_time is not None and records[-1]["time"] >= first_time + window_s:
            until = records[-1]["time"]
            break
        wait(0.5)
    cpu_end = cpu_jiffies(pid)
    run.request_stop()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_alive(run.status_raw().get("pid")) and time.monotonic() < deadline:
        wait(0.2)
    status = run.status()
    if status.get("state") not in ("stopped", "finished"):
        raise RuntimeError(f"run {run.name} ended {status.get('state')}: {status.get('error')}")
    measured, _ = speed(run, start or 0.0, until)
    if measured is None:
        raise RuntimeError(f"run {run.name}: no progress records after its warm-up (an epoch shorter than "
                           f"{WARMUP_S:.0f} s of training?)")
    if cpu_start:
        measured.training_cores, measured.other_cores = cores_used(cpu_start, cpu_end)
    return measured


def launch_cli(config: Path, run_dir: Path, threads: int) -> tuple[RunDir, subprocess.Popen]:
    """The app's training command as a user types it: same recipe file, same flags."""
    run_dir.mkdir(parents=True)
    with open(run_dir / launcher.TRAIN_LOG, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "fercore", "train", "--config", str(config), "--run-dir",
                                    str(run_dir), "--threads", str(threads)], cwd=ROOT, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return RunDir(run_dir), process


def launch_app(cfg: TrainConfig, runs: Path, name: str, threads: int) -> RunDir:
    """launcher.start_training into the runs folder, with its thread choice replaced by `threads` (its own
    choice when equal)."""
    with (mock.patch.dict(os.environ, {paths.RUNS_DIR_ENV: str(runs)}),
          mock.patch.object(launcher, "training_threads", lambda: threads)):
        return launcher.start_training(cfg, name)


def wait_until_active(run: RunDir, wait: Wait) -> None:
    """Until the launched process has written its first status (the app's Live tab then opens on it)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not run.status_raw():
        if time.monotonic() > deadline or launcher.launch_problem(run):
            raise RuntimeError(f"run {run.name} did not start: {launcher.log_tail(run, 3)}")
        wait(0.2)


@contextlib.contextmanager
def app_and_browser(runs: Path) -> Iterator[tuple[str, object]]:
    """The app's server on the runs folder, and a headless Chromium; yields the server's URL and the browser."""
    from playwright.sync_api import sync_playwright

    env = {paths.RUNS_DIR_ENV: str(runs), settings.DATA_DIR_ENV: str(runs.parent / "app-data"),
           "FERCORE_ICE_SERVERS": "[]", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    with streamlit_server(ROOT / "streamlit_app.py", env) as (server, base), sync_playwright() as playwright:
        wait_for_first_page(server, base, "streamlit_app.py")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield base, browser
        finally:
            browser.close()


def progress_line(page: object) -> str:
    return page.get_by_test_id("stProgress").first.inner_text()  # type: ignore[attr-defined]


def measure_app(cfg: TrainConfig, runs: Path, name: str, threads: int, base: str, browser: object,
                window_s: float) -> Speed:
    """Launch the run the app's way, open the Train page on it (its Live tab), measure while the tab refreshes."""
    run = launch_app(cfg, runs, name, threads)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")  # type: ignore
    try:
        page = context.new_page()
        wait: Wait = lambda seconds: page.wait_for_timeout(seconds * 1000)  # noqa: E731  (keeps Playwright served)
        wait_until_active(run, wait)
        page.goto(f"{base}/train", timeout=PAGE_TIMEOUT_S * 1000)
        running = page.get_by_test_id("stProgress").filter(has_text="running")
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while not running.count():
            if not run.is_active():
                raise RuntimeError(f"run {name} ended before the Train page showed it running: give it more data")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Train page did not show run {name} running within {PAGE_TIMEOUT_S:.0f} s")
            wait(0.2)
        before = progress_line(page)
        measured = follow(run, window_s, wait, ready_at=time.time())
        if progress_line(page) == before:
            raise RuntimeError(f"the Live tab did not refresh during run {name}: {before!r}")
        return measured
    finally:
        context.close()


def app_training_rows(data: str, window_s: float, rounds: int, work: Path) -> list[Row]:
    """Section 8: images/s of the CLI alone and of the app-launched run, for cores-1, every core and the app's
    choice, in rounds."""
    cores = usable_cores()
    app_threads = launcher.training_threads()
    choices = dict.fromkeys([max(1, cores - 1), cores, app_threads])  # fewer on a one-core machine
    cfg = recipe(data)
    load_data(data)  # fills the decode cache (FERCORE_CACHE_DIR) once: every run then reads it, none decodes
    runs = work / "app-training" / "runs"
    runs.mkdir(parents=True)
    config = runs.parent / "recipe.json"
    atomic_write_json(config, cfg.to_dict())

    def label(threads: int) -> str:
        which = {cores - 1: "cores - 1", cores: "every core"}.get(threads, f"{threads} of {cores} cores")
        return f"--threads {threads} ({which}{', what the app uses' if threads == app_threads else ''})"

    cli = {t: Variant(f"CLI alone, {label(t)}", t, False) for t in choices}
    app = {t: Variant(f"app-launched + server + browser on Live, {label(t)}", t, True) for t in choices}
    speeds: dict[str, list[Speed]] = {v.name: [] for v in (*cli.values(), *app.values())}
    for round_ in range(rounds):  # rounds, so that a busy spell of the machine slows every variant alike
        for variant in cli.values():
            run, process = launch_cli(config, runs / f"cli-{variant.threads}t-{round_}", variant.threads)
            try:
                wait_until_active(run, time.sleep)
                speeds[variant.name].append(follow(run, window_s, time.sleep))
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
        with app_and_browser(runs) as (base, browser):
            for variant in app.values():
                name = f"app-{variant.threads}t-{round_}"
                speeds[variant.name].append(measure_app(cfg, runs, name, variant.threads, base, browser, window_s))

    medians = {name: statistics.median(s.images_per_s for s in runs_) for name, runs_ in speeds.items()}
    best_cli = max((v.name for v in cli.values()), key=medians.get)
    recipe_note = f"{PRESET} preset ({cfg.arch}, batch {cfg.batch_size}, {cfg.optimizer}) on {data}"
    rows = []
    for variant in (*cli.values(), *app.values()):
        measured = speeds[variant.name]
        steps = sum(s.steps for s in measured)
        note = (f"{steps} steps in {sum(s.seconds for s in measured):.0f} s after {WARMUP_S:.0f} s of warm-up "
                f"({statistics.median(s.whole for s in measured):.0f} img/s with it); CPU in cores: training "
                f"{statistics.median(s.training_cores for s in measured):.2f}, everything else "
                f"{statistics.median(s.other_cores for s in measured):.2f}")
        if variant.app:
            baseline = cli[variant.threads].name
            if variant.threads == app_threads:
                note = (f"**vs the best CLI run ({best_cli}): {medians[variant.name] / medians[best_cli]:.2f}x** "
                        f"(requirement: at least 0.80x); " + note)
        else:
            baseline = best_cli
            if (busy := max(s.other_cores for s in measured)) > BUSY_CORES:
                note = f"**not alone: other processes used up to {busy:.2f} cores**; " + note
            if variant.name == best_cli:
                note = f"the best CLI run; {recipe_note}; " + note
        rows.append(Row(SECTION, variant.name, [s.images_per_s for s in measured], "img/s", baseline, note))
    return rows
