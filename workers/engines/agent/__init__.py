"""The agents shipped to hosts, and the one bootstrap that starts them.

An agent is a stdlib-only Python script (``hashagent.py``, ``syncagent.py``)
that runs on a host's own ``python3`` and leaves nothing behind: the worker
starts ``python3 -c BOOT LENGTH ARGS...`` and writes ``agent_payload(name)`` to
its stdin. The bootstrap reads exactly ``LENGTH`` bytes — so stdin stays open
for the agent's own protocol (negotiation answers, sync frames) — unpacks the
modules, makes every module but the last importable by name and runs the last
one as ``__main__`` with ``ARGS``.

Payload: zlib of, per module, ``name length\\n`` then ``length`` bytes of source.
"""
from __future__ import annotations

import shlex
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).parent
# Each agent with what it imports: the last module is the one that runs.
AGENTS: dict[str, tuple[str, ...]] = {
    "hashagent": ("hashagent",),
    "syncagent": ("hashagent", "syncagent"),
}
# Kept to what a python3 >= 3.6 on a bare host understands.
BOOT = ("import sys,types,zlib\n"
        "raw=zlib.decompress(sys.stdin.buffer.read(int(sys.argv[1])));del sys.argv[1];p=0\n"
        "while True:\n"
        " e=raw.index(b'\\n',p);name,k=raw[p:e].decode().split();s=e+1;p=s+int(k)\n"
        " code=compile(raw[s:p],name+'.py','exec')\n"
        " if p>=len(raw):\n"
        "  sys.argv[0]=name;exec(code,{'__name__':'__main__'});break\n"
        " m=types.ModuleType(name);exec(code,m.__dict__);sys.modules[name]=m\n")
# A host without python3 exits 127 before reading stdin, so callers can tell "no python3" from a failure.
NO_PYTHON_EXIT = 127


def agent_source(name: str = "hashagent") -> bytes:
    """One agent script's source."""
    return (HERE / f"{name}.py").read_bytes()


@lru_cache(maxsize=None)
def agent_payload(name: str) -> bytes:
    """What to write to the bootstrap's stdin to run agent ``name``."""
    try:
        modules = AGENTS[name]
    except KeyError:
        raise ValueError(f"unknown agent {name!r} (known: {', '.join(AGENTS)})") from None
    parts = []
    for module in modules:
        src = agent_source(module)
        parts.append(b"%s %d\n" % (module.encode(), len(src)) + src)
    return zlib.compress(b"".join(parts), 9)


def agent_argv(name: str, args: Sequence[str] = (), *, python: str = "python3") -> list[str]:
    """The argv that starts agent ``name`` (its payload then goes to stdin)."""
    return [python, "-c", BOOT, str(len(agent_payload(name))), *args]


def agent_command(name: str, args: Sequence[str] = ()) -> str:
    """A remote shell command that starts agent ``name``, or exits 127 without reading stdin
    when the host has no python3."""
    return (f"command -v python3 >/dev/null 2>&1 || exit {NO_PYTHON_EXIT}; "
            f"exec {shlex.join(agent_argv(name, args))}")
