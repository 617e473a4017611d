"""Shared pieces of the benchmark suite: result rows and their table, the machine, timed child processes."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = {
    1: "training, one epoch",
    2: "inference",
    3: "webcam",
    4: "evaluation",
    5: "app start",
    6: "peak memory",
    7: "time to accuracy",
    8: "app-launched training vs CLI",
}


@dataclass
class Row:
    """One line of the table: samples (shown as their median) and the name of the row it is a ratio against."""

    section: int
    name: str
    samples: list[float]
    unit: str
    baseline: str | None = None
    note: str = ""

    @property
    def value(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


@dataclass
class Finished:
    """A child process run to its end."""

    seconds: float  # wall time from start to exit
    max_rss_mb: float  # its peak resident memory in MiB (ru_maxrss: the largest of it and its waited-for children)
    stdout: str


def number(value: float | None) -> str:
    """A short human number: 1,234 / 123.4 / 12.3 / 1.23 / 0.0123."""
    if value is None:
        return "-"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _spread(samples: list[float]) -> str:
    if len(samples) < 2:
        return f"{len(samples)}"
    return f"{len(samples)} ({number(min(samples))}-{number(max(samples))})"


def markdown_table(rows: list[Row]) -> str:
    """The rows as one Markdown table, in section order; ratio = this row's median / its baseline's median."""
    medians = {row.name: row.value for row in rows}
    lines = ["| # | benchmark | median | unit | ratio | vs | n (range) | notes |",
             "|--:|---|--:|---|--:|---|---|---|"]
    for row in sorted(rows, key=lambda r: r.section):
        base = medians.get(row.baseline) if row.baseline else None
        ratio = f"{row.value / base:.2f}x" if row.value is not None and base else ""
        vs = "baseline" if row.baseline == row.name else (row.baseline or "")
        lines.append(f"| {row.section} | {row.name} | {number(row.value)} | {row.unit} | {ratio} | {vs} "
                     f"| {_spread(row.samples)} | {row.note} |")
    return "\n".join(lines)


def machine_lines(threads: int) -> list[str]:
    """The machine and software the numbers were taken on."""
    import cv2
    import torch

    from fercore.hardware import cpu_has_bf16, cpu_name, usable_cores

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    bf16 = "native" if cpu_has_bf16() else "not native"
    where = f"torch and OpenCV here, fercore train --threads {threads}, the baseline's torch.set_num_threads"
    return [
        f"CPU: {cpu_name()}, {usable_cores()} usable core(s) of {os.cpu_count()}, bf16 {bf16}",
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, Python {platform.python_version()}",
        f"threads: {threads} ({where}; DataLoader workers use 1 each)",
        f"load average at start (1, 5, 15 min): {load}",
    ]


# The child is started by this small wrapper, not by us: a child's ru_maxrss starts at the peak of the process it
# was forked from (Linux records the forked memory at exec), and ours holds torch, models and data.
_PEAK_WRAPPER = ("import os, subprocess, sys; child = subprocess.Popen(sys.argv[2:]); _, status, usage = "
                 "os.wait4(child.pid, 0); open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); "
                 "sys.exit(os.waitstatus_to_exitcode(status))")


def run_timed(command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> Finished:
    """Run a child process to its end: wall seconds, its own peak memory (ru_maxrss), stdout; raises if it fails."""
    with tempfile.TemporaryDirectory(prefix="bench-proc-") as tmp:
        peak, out, err = (Path(tmp) / name for name in ("peak", "out", "err"))
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            start = time.perf_counter()
            code = subprocess.call([sys.executable, "-S", "-c", _PEAK_WRAPPER, str(peak), *command], stdout=stdout,
                                   stderr=stderr, cwd=cwd, env={**os.environ, **(env or {})})
            seconds = time.perf_counter() - start
        if code:
            tail = " | ".join(err.read_text(errors="replace").strip().splitlines()[-3:])
            raise RuntimeError(f"{' '.join(command[:4])} ... exited {code}: {tail}")
        return Finished(seconds, int(peak.read_text()) / 1024, out.read_text(errors="replace"))


@dataclass
class Interleaved:
    """Several actions run in turn on each input, so that a busy spell of the machine slows all alike."""

    samples: dict[str, list[float]] = field(default_factory=dict)  # milliseconds per call
    results: dict[str, list[Any]] = field(default_factory=dict)

    def run(self, actions: dict[str, Callable[[Any], Any]], inputs: list[Any]) -> None:
        for action in actions.values():  # warm-up
            action(inputs[0])
        for item in inputs:
            for name, action in actions.items():
                start = time.perf_counter()
                result = action(item)
                self.samples.setdefault(name, []).append((time.perf_counter() - start) * 1000)
                self.results.setdefault(name, []).append(result)
