"""SSH sessions to production hosts and clones: strict host keys, streamed output.

A connection to a host whose key is unknown or different is refused before any
command runs — a rehearsal tool that writes to production must never be
man-in-the-middled into writing somewhere else (``remote.connect``).

A ``Session`` is one paramiko connection; every command on it is a
``remote.RemoteProcess``, the same object the agents and bulk streams use. For
bulk streams (clone, sync) ``RemoteProcess.start(..., transport="openssh")``
runs the OpenSSH client with the same pinned key and ``StrictHostKeyChecking=yes``:
on these machines it moves data ~2.5x faster than paramiko (see MACHINE-NOTES).

``Endpoint``, the key helpers and the error types live in ``endpoint`` (no
paramiko); they are importable from here too.
"""
from __future__ import annotations

import socket
import time
from collections import deque
from typing import Callable, Iterable, Sequence

import paramiko

from .endpoint import (AuthenticationFailed, Cancelled, CommandFailed, CommandResult, CommandTimeout, Endpoint,
                       HostKeyMismatch, HostUnreachable, PublicKey, SSHError, command_string, fingerprint,
                       known_hosts_name, parse_public_key)
from .events import Emitter, NullEmitter
from .remote import STDERR_TAIL, CancelWatch, LineSplitter, RemoteProcess, connect, text

__all__ = [
    "Session", "scan_host_key", "Endpoint", "PublicKey", "CommandResult", "command_string", "fingerprint",
    "known_hosts_name", "parse_public_key", "SSHError", "HostUnreachable", "HostKeyMismatch",
    "AuthenticationFailed", "CommandTimeout", "CommandFailed", "Cancelled",
]


class Session:
    """One authenticated SSH connection with the host key verified.

    Use as a context manager: ``with Session.connect(endpoint) as s: s.run(...)``.
    """

    def __init__(self, endpoint: Endpoint, client: paramiko.SSHClient) -> None:
        self.endpoint = endpoint
        self.client = client
        # set by an engine that can be cancelled: every process started here is then stopped on
        # the host when the watch fires
        self.watch: CancelWatch | None = None

    @classmethod
    def connect(cls, endpoint: Endpoint, *, timeout: float = 10.0) -> "Session":
        return cls(endpoint, connect(endpoint, timeout=timeout))

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def start(self, command: str | Sequence[str], *, on_stderr_line: Callable[[str], None] | None = None,
              stderr_lines: int = STDERR_TAIL) -> RemoteProcess:
        """Start a command on this connection and hand back the running process."""
        proc = RemoteProcess.start(self.endpoint, command, client=self.client, on_stderr_line=on_stderr_line,
                                   stderr_lines=stderr_lines)
        if self.watch is not None:
            self.watch.track(proc)
        return proc

    def run(self, command: str | Sequence[str], *, emitter: Emitter | None = None,
            timeout: float | None = None, stdin: bytes | None = None,
            expect_exit: int | Iterable[int] | None = None, tail_lines: int = 200,
            cancelled: Callable[[], bool] | None = None) -> CommandResult:
        """Run a command, streaming stdout/stderr line by line to ``emitter``.

        ``cancelled``: polled while it runs; once it says yes the command's process group is
        stopped on the host (SIGTERM, then SIGKILL) and ``Cancelled`` is raised.

        ``expect_exit``: if given, a different exit code raises ``CommandFailed``.
        ``timeout``: wall-clock seconds; on expiry the channel is closed (the remote
        process loses its pipes) and ``CommandTimeout`` is raised.
        """
        emitter = emitter or NullEmitter()
        cmd = command_string(command)
        out_tail: deque[str] = deque(maxlen=tail_lines)

        def stdout_line(raw: bytes) -> None:
            line = text(raw)
            out_tail.append(line)
            emitter.log(line, "stdout")

        out = LineSplitter(stdout_line)
        start = time.monotonic()
        with CancelWatch(cancelled) as watch:
            proc, exit_code, timed_out = self._complete(cmd, stdin, out.feed, timeout,
                                                        on_stderr_line=lambda line: emitter.log(line, "stderr"),
                                                        stderr_lines=tail_lines, watch=watch)
        out.flush()
        if watch.fired.is_set():
            raise Cancelled(f"{self.endpoint}: cancelled; the command was stopped on the host after "
                            f"{time.monotonic() - start:.1f}s: {cmd}")
        err_tail = proc.stderr_tail
        result = CommandResult(cmd, exit_code, time.monotonic() - start, list(out_tail), err_tail, timed_out)
        if timed_out:
            raise CommandTimeout(f"{self.endpoint}: command timed out after {timeout}s: {cmd}")
        if expect_exit is not None:
            allowed = {expect_exit} if isinstance(expect_exit, int) else set(expect_exit)
            if exit_code not in allowed:
                last = (err_tail or list(out_tail) or [""])[-1]
                raise CommandFailed(
                    f"{self.endpoint}: exit code {exit_code} (expected {sorted(allowed)}) from: {cmd}"
                    + (f" — {last}" if last else ""), result)
        return result

    def check_output(self, command: str | Sequence[str], *, timeout: float | None = 60,
                     stdin: bytes | None = None) -> bytes:
        """Run a command and return its raw stdout; non-zero exit raises CommandFailed."""
        cmd = command_string(command)
        start = time.monotonic()
        chunks: list[bytes] = []
        proc, code, timed_out = self._complete(cmd, stdin, chunks.append, timeout)
        if timed_out:
            raise CommandTimeout(f"{self.endpoint}: command timed out after {timeout}s: {cmd}")
        if code != 0:
            stderr = "\n".join(proc.stderr_tail).strip().splitlines()
            result = CommandResult(cmd, code, time.monotonic() - start, [], stderr)
            raise CommandFailed(f"{self.endpoint}: exit code {code} from: {cmd}"
                                + (f" — {stderr[-1]}" if stderr else ""), result)
        return b"".join(chunks)

    def _complete(self, cmd: str, stdin: bytes | None, on_stdout: Callable[[bytes], None], timeout: float | None,
                  *, on_stderr_line: Callable[[str], None] | None = None, stderr_lines: int = STDERR_TAIL,
                  watch: CancelWatch | None = None) -> tuple[RemoteProcess, int | None, bool]:
        """Run ``cmd`` to its end: ``stdin`` sent, stdout to ``on_stdout``. Returns the (closed)
        process, its exit code (None on timeout) and whether ``timeout`` seconds passed first."""
        start = time.monotonic()
        proc = self.start(cmd, on_stderr_line=on_stderr_line, stderr_lines=stderr_lines)
        if watch is not None:
            watch.track(proc)
        try:
            if stdin is not None:
                proc.write(stdin)
            proc.close_stdin()
            try:
                proc.drain(on_stdout, deadline=None if timeout is None else start + timeout)
            except CommandTimeout:
                return proc, None, True
            return proc, proc.wait(), False
        finally:
            proc.close()

    def sftp(self) -> paramiko.SFTPClient:
        return self.client.open_sftp()


def scan_host_key(host: str, port: int = 22, *, timeout: float = 10.0) -> str:
    """Fetch the key a host presents, for an operator to compare out of band and pin.

    This is the registration path only; connections never trust this.
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise HostUnreachable(f"{host}:{port}: cannot connect: {exc.strerror or exc}") from exc
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    except paramiko.SSHException as exc:
        raise SSHError(f"{host}:{port}: SSH handshake failed: {exc}") from exc
    finally:
        transport.close()
