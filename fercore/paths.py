"""Where the project keeps things; torch-free, so the app's pages and the engine share one copy."""
from __future__ import annotations

import os
from pathlib import Path

from fercore.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CHECKPOINT = PROJECT_ROOT / "checkpoints" / "fer2013.pt"  # the default model of every command and page
RUNS_DIR_ENV = "FERCORE_RUNS_DIR"


def runs_dir() -> Path:
    """Where training runs live, for the app and the CLI alike: $FERCORE_RUNS_DIR (a relative one from the current
    folder, made absolute: the app's training processes start in the project) or runs/ in the project."""
    return user_path(os.environ.get(RUNS_DIR_ENV) or PROJECT_ROOT / "runs").absolute()


def user_path(path: str | Path) -> Path:
    """path with a leading ~ or ~user expanded; UserError (not Path's RuntimeError) for a user with no home."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise UserError(f"{path}: no such user's home folder (did you mean ~/...?)") from None


def output_path(path: str | Path) -> Path:
    """A path to write (a file, or a run's folder), ~ expanded; UserError when nothing can be written there: it is
    a device, a pipe or a broken link (a write would replace it), or what should be a folder above it is a file."""
    out = user_path(path)
    if os.path.lexists(out) and not (out.is_file() or out.is_dir()):
        raise UserError(f"{path} is not a file or folder (a device, a pipe or a broken link): choose another path")
    above = next(p for p in out.absolute().parents if os.path.lexists(p))  # the root always exists
    if not above.is_dir():
        raise UserError(f"cannot write {path}: {above} is a file, not a folder")
    return out


def shown(path: str) -> str:
    """A path as cards and messages print it: relative to the project when inside it (runs/x/best.pt)."""
    absolute = Path(os.path.abspath(path))
    return str(absolute.relative_to(PROJECT_ROOT)) if absolute.is_relative_to(PROJECT_ROOT) else path
