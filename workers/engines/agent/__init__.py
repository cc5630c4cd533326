"""The hashing agent shipped to hosts (see hashagent.py) and helpers to load its source."""
from __future__ import annotations

from pathlib import Path

AGENT_PATH = Path(__file__).with_name("hashagent.py")


def agent_source() -> bytes:
    """The agent script as bytes, to send as ``python3 -`` stdin."""
    return AGENT_PATH.read_bytes()
