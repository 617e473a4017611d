"""Keeping libraries quiet where their warnings and log lines are noise to a user (torch's internals, mostly)."""
from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_FILTERS_LOCK = threading.RLock()


@contextmanager
def warning_filters() -> Iterator[None]:
    """warnings.catch_warnings, one thread at a time: the filters are process-wide and catch_warnings saves and
    restores them, so two app sessions' threads doing so at once could leave one's "ignore" in place for good."""
    with _FILTERS_LOCK, warnings.catch_warnings():
        yield


@contextmanager
def no_warnings() -> Iterator[None]:
    """Ignore every warning for the duration (see warning_filters)."""
    with warning_filters():
        warnings.simplefilter("ignore")
        yield


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a library's logger below errors for the duration."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
