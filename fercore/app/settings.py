"""Where the app keeps and finds things, from environment variables: runs, uploads, readable data, ICE servers."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fercore.data import is_synthetic
from fercore.errors import UserError
from fercore.paths import PROJECT_ROOT, user_path

DATA_DIR_ENV = "FERCORE_DATA_DIR"
ICE_SERVERS_ENV = "FERCORE_ICE_SERVERS"
DATA_ROOTS_ENV = "FERCORE_DATA_ROOTS"  # extra folders (os.pathsep-separated) whose data the app may read


def unbound_server_refusal(address: str | None) -> str | None:
    """Why the app refuses to run when its server has no address, else None. Streamlit then listens on every
    network interface: no .streamlit/config.toml it read (the project's, which sets 127.0.0.1, the user's, the
    current folder's) set one, and no --server.address did."""
    if address:
        return None
    return ("Streamlit has no server address (the project's .streamlit/config.toml, which sets 127.0.0.1, was not "
            "read or was changed), so it listens on every network interface; this app starts processes and reads "
            "your files. Restore that setting, or choose who may reach it with --server.address.")


def data_dir() -> Path:
    """Where uploaded data sets are stored: $FERCORE_DATA_DIR (made absolute, as runs_dir) or data/ in the
    project."""
    return user_path(os.environ.get(DATA_DIR_ENV) or PROJECT_ROOT / "data").absolute()


def data_roots() -> list[Path]:
    """Folders the app may read data from: its data folder plus those listed in $FERCORE_DATA_ROOTS."""
    extra = [user_path(p) for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [data_dir(), *extra]


def allowed_data_path(typed: str) -> Path:
    """A typed data path, resolved; refused (UserError) when it lies outside every allowed data root."""
    path = user_path(typed).resolve()
    roots = [root.resolve() for root in data_roots()]
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise UserError(f"{typed} is outside the folders this app may read ({', '.join(map(str, roots))}): "
                        f"put the data there or add its folder to {DATA_ROOTS_ENV}")
    return path


def default_data_source(source: str) -> str:
    """source when the app may read it and it exists, else the synthetic demo set."""
    if is_synthetic(source):
        return source
    try:
        return str(allowed_data_path(source)) if user_path(source).exists() else "synthetic"
    except UserError:
        return "synthetic"


def ice_servers() -> list[dict[str, Any]]:
    """WebRTC ICE servers from $FERCORE_ICE_SERVERS (a JSON list); none by default, so nothing outside is asked."""
    raw = os.environ.get(ICE_SERVERS_ENV, "").strip()
    if not raw:
        return []
    example = '[{"urls": ["stun:stun.example.org:3478"]}]'
    try:
        servers = json.loads(raw)
    except ValueError:
        raise UserError(f"{ICE_SERVERS_ENV} is not valid JSON: give a list such as {example}") from None
    if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
        raise UserError(f"{ICE_SERVERS_ENV} must be a JSON list of servers with 'urls', such as {example}")
    return servers
