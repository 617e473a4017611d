"""App start: `streamlit run` until the server answers /_stcore/health and serves the first page's HTML.

Only 127.0.0.1 is asked. Streamlit runs a page's script when a browser session connects, not at start, so this
measures the server start a user waits for before the page can appear; a one-line app started the same way is
the baseline.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from harness import ROOT, Row

HELLO = "one-line app (st.write), the baseline"
POLL_S, TIMEOUT_S = 0.02, 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@contextlib.contextmanager
def streamlit_server(script: Path, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """`streamlit run script` headless on a free 127.0.0.1 port (env added to ours): the process and its base URL,
    from the moment it is started; its whole process group is ended on leaving."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port),
               "--browser.gatherUsageStats", "false"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


def wait_for_first_page(server: subprocess.Popen, base: str, name: str) -> None:
    """Until health is ok and / serves HTML; raises when the server exits or takes longer than TIMEOUT_S."""
    start = time.perf_counter()
    while time.perf_counter() - start < TIMEOUT_S:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit run {name} exited with {server.returncode}")
        if _get(f"{base}/_stcore/health") == b"ok" and b"<html" in (_get(base + "/") or b"").lower():
            return
        time.sleep(POLL_S)
    raise RuntimeError(f"streamlit run {name}: no page after {TIMEOUT_S:.0f} s")


def seconds_to_first_page(script: Path) -> float:
    """Start `streamlit run script` headless on a free local port; seconds until health is ok and / serves HTML."""
    start = time.perf_counter()
    with streamlit_server(script) as (server, base):
        wait_for_first_page(server, base, script.name)
        return time.perf_counter() - start


def app_rows(work: Path, repeats: int) -> list[Row]:
    """Section 5: the app's start against a one-line app's, alternating, medians of `repeats`."""
    hello = work / "hello_app.py"
    hello.write_text('import streamlit as st\n\nst.write("hello")\n')
    scripts = {HELLO: hello, "streamlit run streamlit_app.py": ROOT / "streamlit_app.py"}
    seconds: dict[str, list[float]] = {name: [] for name in scripts}
    for _ in range(repeats):
        for name, script in scripts.items():
            seconds[name].append(seconds_to_first_page(script))
    return [Row(5, name, values, "s", HELLO, "until /_stcore/health is ok and / serves HTML")
            for name, values in seconds.items()]
