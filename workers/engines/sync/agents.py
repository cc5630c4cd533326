"""The sync agents over SSH, and the worker's relay between them.

A reader agent runs on the source (the clone) and an apply agent on the target
(production): ``agent/syncagent.py``, shipped together with ``agent/hashagent.py``
(digests are the manifests' own) through the one agent bootstrap, each a
``remote.RemoteProcess``. Bytes go source -> worker -> target: the clone has no
route to production. The target asks for the 4 KiB blocks of the planned chunks
it lacks, the worker passes each request to the reader, and the reader's frames
travel back as a plain byte relay.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Callable

from ..agent import agent_command, agent_payload
from ..endpoint import Endpoint, SSHError
from ..events import Emitter
from ..remote import CancelWatch, RemoteProcess, pick_transport
from .errors import ConnectionLost

DEFAULT_TRANSPORT = "auto"
MODES = ("read", "apply", "rollback")


def start_agent(endpoint: Endpoint, mode: str, transport: str) -> RemoteProcess:
    """Start the sync agent in ``mode`` on ``endpoint``; its stdin is then free for the plan."""
    if mode not in MODES:
        raise ValueError(f"sync agent mode must be one of {MODES}, not {mode!r}")
    try:
        proc = RemoteProcess.start(endpoint, agent_command("syncagent", [mode]),
                                   transport=pick_transport(transport, 0))
    except (OSError, SSHError) as exc:
        raise ConnectionLost(f"{endpoint}: cannot start the sync agent: {exc}") from exc
    try:
        proc.write(agent_payload("syncagent"))
    except OSError as exc:
        proc.close()
        raise ConnectionLost(f"{endpoint}: cannot start the sync agent: {exc}"
                             + (f" ({proc.stderr_tail[-1]})" if proc.stderr_tail else "")) from exc
    return proc


@dataclass
class Transfer:
    """Result of one reader->apply exchange."""

    end: dict | None
    fatal: str | None
    states: dict[int, dict]                 # last state record per file index
    to_target: int                          # bytes written to the target side's SSH stdin (all of it)
    to_source: int
    payload: int                            # file data bytes that travelled
    target_exit: int | None
    target_stderr: list[str]
    source_exit: int | None = None
    source_stderr: list[str] = field(default_factory=list)
    cancelled: bool = False                 # the watch fired: both agents were stopped on their hosts

    def source_trouble(self) -> str:
        """The clone-side agent's failure, if it had one (a dead reader ends the target's stream too)."""
        if self.source_exit in (0, None) and not self.source_stderr:
            return ""
        return f"; clone agent exit {self.source_exit}" + (f": {self.source_stderr[-1]}" if self.source_stderr else "")


def _start_both(src_ep: Endpoint, dst_ep: Endpoint, transport: str) -> tuple[RemoteProcess, RemoteProcess]:
    """Reader and apply agents, started in parallel (each start is a connection + python3)."""
    started: dict[str, RemoteProcess | BaseException] = {}

    def start(key: str, ep: Endpoint, mode: str) -> None:
        try:
            started[key] = start_agent(ep, mode, transport)
        except BaseException as exc:  # noqa: BLE001 — re-raised below after the other side is cleaned up
            started[key] = exc

    threads = [threading.Thread(target=start, args=("dst", dst_ep, "apply")),
               threading.Thread(target=start, args=("src", src_ep, "read"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [v for v in started.values() if isinstance(v, BaseException)]
    if failed:
        for v in started.values():
            if isinstance(v, RemoteProcess):
                v.close()
        raise failed[0]
    src, dst = started["src"], started["dst"]
    assert isinstance(src, RemoteProcess) and isinstance(dst, RemoteProcess)
    return src, dst


def exchange(src_ep: Endpoint, dst_ep: Endpoint, src_plan: dict, dst_plan: dict, *, transport: str,
             on_state: Callable[[dict], None], emitter: Emitter, watch: CancelWatch | None = None) -> Transfer:
    """Run reader (source) and apply (target) agents with the worker relaying between them.
    ``watch``: once it fires, both agents are stopped on their hosts (SIGTERM: the apply agent
    finishes the file it is swapping, removes its temp file and exits) and the Transfer says so."""
    src, dst = _start_both(src_ep, dst_ep, transport)
    if watch is not None:
        watch.track(dst)
        watch.track(src)
    payload = [0]
    try:
        dst.write(json.dumps(dst_plan).encode() + b"\n")
        src.write(json.dumps(src_plan).encode() + b"\n")
    except OSError as exc:
        src.close()
        dst.close()
        raise ConnectionLost(f"agent exited before reading its plan: {exc}") from exc

    def relay_frames() -> None:
        # source -> target: a plain byte relay (frames are parsed by the apply agent)
        try:
            while True:
                data = src.read(1 << 20)
                if not data:
                    break
                dst.write(data)
        except (OSError, EOFError):
            pass
        finally:
            dst.close_stdin()

    relay = threading.Thread(target=relay_frames, daemon=True)
    relay.start()
    states: dict[int, dict] = {}
    try:
        end, fatal = _route(dst, src, states, payload, on_state, emitter)
    except BaseException:
        # a Journal/emitter callback failed (or the worker is being stopped): drop both connections
        # so no agent keeps running unattended; production stays consistent (temp + rename)
        src.kill()
        dst.kill()
        relay.join(5)
        src.close()
        dst.close()
        raise
    src.close_stdin()
    relay.join(30)
    if relay.is_alive():
        src.kill()
        relay.join(5)
    code = dst.wait()
    if end is None:
        src.kill()
    scode = src.wait()
    return Transfer(end, fatal, states, dst.sent, src.sent, payload[0], code, dst.stderr_tail, scode,
                    src.stderr_tail, cancelled=watch is not None and watch.fired.is_set())


def _route(dst: RemoteProcess, src: RemoteProcess, states: dict[int, dict], payload: list[int],
           on_state: Callable[[dict], None], emitter: Emitter) -> tuple[dict | None, str | None]:
    """Target agent's messages: requests go to the source's reader, states to the caller."""
    end: dict | None = None
    fatal: str | None = None
    for raw in dst.lines():
        try:
            msg = json.loads(raw)
        except ValueError:
            emitter.log(f"production agent: {raw[:200]!r}", "stderr")
            continue
        ev = msg.get("ev")
        if ev in ("need", "skip"):
            try:
                src.write(raw + b"\n")
            except (OSError, EOFError):
                pass  # the source died: its EOF reaches the apply agent through the relay
        elif ev == "state":
            states[msg["i"]] = msg
            if msg.get("state") == "patched":
                payload[0] += msg.get("bytes", 0)
            on_state(msg)
        elif ev == "end":
            end = msg
            src.close_stdin()
        elif ev == "fatal":
            fatal = msg.get("message", "agent failed")
            src.close_stdin()
    return end, fatal
