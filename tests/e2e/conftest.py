"""Browser tests: the real app under `streamlit run`, driven through Playwright by Debian's Chromium.

One app server and one browser serve the whole session. When the tests run as root (CI does) both live in a network
namespace whose only interface is the loopback: nothing can leave the machine, and the live webcam's WebRTC has to
connect over 127.0.0.1 (the app is told to offer it with FERCORE_RTC_LOOPBACK, see fercore/rtc.py). Elsewhere they
share the machine's network, with a warning.

The app gets its own runs, data and cache folders, with one finished run (the `tiny_checkpoint` model) in it; a test
that needs a server nobody has visited yet gets one of its own (fresh_app_server).
Run in parallel (pytest-xdist), they stay together on one worker (pytest_collection_modifyitems).
Screenshots go to the session's tmp folder, and to docs/screenshots/ when FERCORE_SCREENSHOTS=1. A failing test
leaves its page's screenshot and the server's log under test-artifacts/e2e/.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

try:
    from playwright.sync_api import Browser, Locator, Page, sync_playwright
    from playwright.sync_api import Error as PlaywrightError
except ImportError as exc:  # a clear failure, never a skip: CI installs it from requirements-dev.txt
    raise ImportError("the browser tests need playwright: pip install -r requirements-dev.txt (never "
                      "`playwright install`: they use Debian's chromium)") from exc

from fercore.runs import RunDir, pid_alive

from .e2e_helpers import TINY_RUN, screenshot, write_y4m

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("FERCORE_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS_ENV = "FERCORE_SCREENSHOTS"
DOCS_SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "e2e"
VIEWPORT = {"width": 1280, "height": 900}
SERVER_START_S = 120
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    # the fake webcam: the clip of the fake_webcam fixture, with the permission prompt answered yes
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--allow-loopback-in-peer-connection",
]
LOOPBACK_HOLDER = """
import fcntl, socket, struct, sys
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1  # ip link set lo up, without iproute2
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0)))[1]
    fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
print("up", flush=True)
sys.stdin.read()  # until the tests end (or die): their end of the pipe closes
"""
HEALTH_PROBE = """
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            if reply.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.3)
sys.exit(1)
"""


# ---------------------------------------------------------------- the network the app and the browser share
@pytest.fixture(scope="session")
def netns_prefix() -> Iterator[list[str]]:
    """A command prefix that runs a program in a loopback-only network namespace ([] where none can be made)."""
    tools = {tool: shutil.which(tool) for tool in ("unshare", "nsenter")}
    if os.geteuid() != 0 or not all(tools.values()):
        missing = [tool for tool, path in tools.items() if not path]
        warnings.warn("browser tests share this machine's network: a loopback-only namespace needs root and "
                      f"unshare and nsenter (util-linux; missing: {', '.join(missing) or 'none'})", stacklevel=1)
        yield []
        return
    # the namespace is held by a process in it that switches lo on, says so, then waits for the tests to end
    holder = subprocess.Popen(["unshare", "--net", sys.executable, "-c", LOOPBACK_HOLDER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if (holder.stdout.readline().strip() if holder.stdout else "") != "up":
        holder.kill()
        pytest.fail(f"could not make a loopback-only network namespace: {holder.communicate()[1].strip()}")
    try:
        yield ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--"]
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- the app server
@dataclass
class AppServer:
    url: str
    runs_dir: Path
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop_training(runs_dir: Path, wait_s: float = 20) -> None:
    """Stop training processes the app launched (they run in sessions of their own, outside the server's group)."""
    runs = [RunDir(path) for path in runs_dir.iterdir() if path.is_dir()] if runs_dir.is_dir() else []
    live = {run.status_raw().get("pid"): run for run in runs if pid_alive(run.status_raw().get("pid"))}
    for run in live.values():
        run.request_stop()
    deadline = time.monotonic() + wait_s
    while any(pid_alive(pid) for pid in live) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in live:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def serve_app(root: Path, netns_prefix: list[str]) -> Iterator[AppServer]:
    """`streamlit run streamlit_app.py` on a free port, with the runs, data and cache folders under root."""
    runs_dir = root / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    server = AppServer(f"http://127.0.0.1:{port}", runs_dir, root / "streamlit.log")
    env = {**os.environ, "FERCORE_RUNS_DIR": str(runs_dir), "FERCORE_DATA_DIR": str(root / "data"),
           "FERCORE_CACHE_DIR": str(root / "cache"), "FERCORE_ICE_SERVERS": "[]", "FERCORE_RTC_LOOPBACK": "1",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1"]
    with open(server.log, "wb") as log:
        process = subprocess.Popen([*netns_prefix, *command], cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        probe = subprocess.Popen([*netns_prefix, sys.executable, "-c", HEALTH_PROBE, f"{server.url}/_stcore/health",
                                  str(SERVER_START_S)])
        while probe.poll() is None:
            if process.poll() is not None:
                probe.kill()
                pytest.fail(f"the app server exited ({process.returncode}) before it was healthy:\n"
                            f"{server.log_tail()}")
            time.sleep(0.2)
        if probe.returncode != 0:
            pytest.fail(f"the app server was not healthy within {SERVER_START_S} s:\n{server.log_tail()}")
        yield server
    finally:
        _stop_training(runs_dir)
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path,
               netns_prefix: list[str]) -> Iterator[AppServer]:
    """The app for the whole session, with one finished run (the tiny_checkpoint model) in its runs folder."""
    root = tmp_path_factory.mktemp("app")
    shutil.copytree(tiny_checkpoint.parent, root / "runs" / TINY_RUN, ignore=shutil.ignore_patterns("run.lock"))
    with serve_app(root, netns_prefix) as server:
        yield server


@pytest.fixture
def fresh_app_server(tmp_path: Path, netns_prefix: list[str]) -> Iterator[AppServer]:
    """An app server of its own that nobody has visited yet, with no runs (for what a first visit does)."""
    with serve_app(tmp_path / "app", netns_prefix) as server:
        yield server


# ---------------------------------------------------------------- the browser
@pytest.fixture(scope="session")
def fake_webcam(tmp_path_factory: pytest.TempPathFactory, astronaut_jpeg: bytes) -> tuple[Path, np.ndarray]:
    """A 640x480 30 frames/s clip of the astronaut photo on grey (Chromium loops it), and its RGB frame."""
    path = tmp_path_factory.mktemp("webcam") / "astronaut.y4m"
    return path, write_y4m(path, astronaut_jpeg)


@pytest.fixture(scope="session")
def chromium_executable(tmp_path_factory: pytest.TempPathFactory, netns_prefix: list[str]) -> str:
    """Debian's chromium, started inside the app's network namespace when there is one."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
                    ".ci/run installs it as root; another path: FERCORE_CHROMIUM)")
    if not netns_prefix:
        return CHROMIUM
    wrapper = tmp_path_factory.mktemp("chromium") / "chromium-in-netns"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(netns_prefix) + f' {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture(scope="session")
def browser(chromium_executable: str, fake_webcam: tuple[Path, np.ndarray]) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={fake_webcam[0]}"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`--dist loadgroup`, as .ci/run runs them) the browser tests share one worker: one app server
    and one browser, while the other workers take the rest of the suite."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.e2e_failed = report.failed  # type: ignore[attr-defined]


@pytest.fixture
def page(browser: Browser, app_server: AppServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (a new Streamlit session) per test; a failure leaves a screenshot and the log."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        if getattr(request.node, "e2e_failed", False):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            try:
                page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
            except PlaywrightError as exc:  # the page may be gone; the log still helps
                warnings.warn(f"no failure screenshot: {exc}", stacklevel=1)
            (ARTIFACTS / f"{request.node.name}-server.log").write_text(app_server.log_tail(400))
        context.close()


@pytest.fixture(scope="session")
def shoot(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """shoot(page, name, target=None): a screenshot named name.png (the README's when FERCORE_SCREENSHOTS=1)."""
    folder = tmp_path_factory.mktemp("screenshots")

    def take(page: Page, name: str, target: Locator | None = None) -> Path:
        path = screenshot(page, folder / f"{name}.png", target)
        if os.environ.get(SCREENSHOTS_ENV) == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
        return path

    return take
