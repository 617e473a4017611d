"""Where the project keeps things; torch-free, so the app's pages and the engine share one copy."""
from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CHECKPOINT = PROJECT_ROOT / "checkpoints" / "fer2013.pt"  # the default model of every command and page
