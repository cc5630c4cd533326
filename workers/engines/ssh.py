"""SSH sessions to production hosts and clones: strict host keys, streamed output.

Every host understudy talks to has a *pinned* host key (``ssh-ed25519 AAAA...``)
recorded when it was registered (or, for a clone, when the clone was fixed up).
A connection to a host whose key is unknown or different is refused before any
command runs — a rehearsal tool that writes to production must never be
man-in-the-middled into writing somewhere else.

paramiko carries control traffic and streamed command output. For bulk streams
(clone, sync) ``Endpoint.openssh_argv`` builds an OpenSSH client command with the
same pinned key and ``StrictHostKeyChecking=yes``: on these machines it moves
data ~2.5x faster than paramiko (see MACHINE-NOTES).
"""
from __future__ import annotations

import base64
import hashlib
import os
import select
import shlex
import socket
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import paramiko

from .events import Emitter, NullEmitter


class SSHError(Exception):
    """Base class: anything that went wrong talking to a host over SSH."""


class HostUnreachable(SSHError):
    pass


class HostKeyMismatch(SSHError):
    """The host presented a key other than the pinned one (or none is pinned)."""


class AuthenticationFailed(SSHError):
    pass


class CommandTimeout(SSHError):
    pass


class CommandFailed(SSHError):
    def __init__(self, message: str, result: "CommandResult") -> None:
        super().__init__(message)
        self.result = result


def parse_public_key(line: str) -> paramiko.PKey:
    """Parse an OpenSSH public key line (``type base64 [comment]``)."""
    parts = line.strip().split()
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key line: {line!r}")
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
    except Exception as exc:  # paramiko raises several types for bad blobs
        raise ValueError(f"cannot parse host key {parts[0]}: {exc}") from exc


def fingerprint(line: str) -> str:
    """SHA256 fingerprint as OpenSSH prints it (``SHA256:...``)."""
    blob = base64.b64decode(line.strip().split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach a host. ``host_key`` is the pinned public key line."""

    host: str
    port: int = 22
    user: str = "root"
    key_path: str | None = None
    host_key: str = ""
    label: str = ""

    def __str__(self) -> str:
        return self.label or f"{self.user}@{self.host}:{self.port}"

    def known_hosts_line(self) -> str:
        parts = self.host_key.strip().split()
        return f"{known_hosts_name(self.host, self.port)} {parts[0]} {parts[1]}\n"

    def write_known_hosts(self, directory: str | os.PathLike | None = None) -> Path:
        """Write a one-line known_hosts file for OpenSSH; caller deletes it."""
        if not self.host_key:
            raise HostKeyMismatch(f"{self}: no host key is pinned; refusing to connect")
        fd, name = tempfile.mkstemp(prefix="understudy-kh-", dir=directory)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.known_hosts_line())
        return Path(name)

    def openssh_argv(self, remote_command: str, known_hosts_file: str | os.PathLike,
                     *, compression: bool = False) -> list[str]:
        """An ``ssh`` argv with strict host key checking against the pinned key."""
        argv = [
            "ssh", "-p", str(self.port),
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts_file}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=15",
            "-o", "LogLevel=ERROR",
            "-o", f"Compression={'yes' if compression else 'no'}",
        ]
        if self.key_path:
            argv += ["-i", str(self.key_path), "-o", "IdentitiesOnly=yes"]
        argv += ["-l", self.user, self.host, remote_command]
        return argv


@dataclass
class CommandResult:
    command: str
    exit_code: int | None
    duration: float
    stdout_tail: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)
    timed_out: bool = False

    def as_dict(self) -> dict:
        return {
            "command": self.command, "exit_code": self.exit_code, "duration": round(self.duration, 3),
            "stdout_tail": self.stdout_tail, "stderr_tail": self.stderr_tail, "timed_out": self.timed_out,
        }


class _LineSplitter:
    """Bytes in, complete decoded lines out; a final partial line on flush."""

    def __init__(self, stream: str, emitter: Emitter, tail: deque[str]) -> None:
        self.stream, self.emitter, self.tail = stream, emitter, tail
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            self._emit(raw)

    def flush(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = b""

    def _emit(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        self.tail.append(line)
        self.emitter.log(line, self.stream)


def pump(chan: paramiko.Channel, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None], *,
         timeout: float | None = None, start: float | None = None, read_size: int = 1 << 20) -> bool:
    """Feed a running command's stdout and stderr to callbacks until it exits.

    Returns False if ``timeout`` seconds (from ``start``) passed first. Both streams
    are drained continuously, so a chatty stderr can never block stdout.
    """
    start = time.monotonic() if start is None else start
    while True:
        busy = False
        while chan.recv_ready():
            on_stdout(chan.recv(read_size))
            busy = True
        while chan.recv_stderr_ready():
            on_stderr(chan.recv_stderr(65536))
            busy = True
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            return True
        if timeout is not None and time.monotonic() - start > timeout:
            return False
        if not busy:
            select.select([chan], [], [], 0.1)


def command_string(command: str | Sequence[str]) -> str:
    """A list is an argv: every element is quoted, never interpreted by the shell."""
    return command if isinstance(command, str) else shlex.join(list(command))


class Session:
    """One authenticated SSH connection with the host key verified.

    Use as a context manager: ``with Session.connect(endpoint) as s: s.run(...)``.
    """

    def __init__(self, endpoint: Endpoint, client: paramiko.SSHClient) -> None:
        self.endpoint = endpoint
        self.client = client

    @classmethod
    def connect(cls, endpoint: Endpoint, *, timeout: float = 10.0) -> "Session":
        if not endpoint.host_key.strip():
            raise HostKeyMismatch(
                f"{endpoint}: no host key is pinned for this host; register its key "
                f"(check the fingerprint out of band) before connecting")
        pinned = parse_public_key(endpoint.host_key)
        client = paramiko.SSHClient()
        client.get_host_keys().add(known_hosts_name(endpoint.host, endpoint.port),
                                   pinned.get_name(), pinned)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pkey = None
        if endpoint.key_path:
            try:
                pkey = paramiko.PKey.from_path(endpoint.key_path)
            except FileNotFoundError as exc:
                raise AuthenticationFailed(f"{endpoint}: private key {endpoint.key_path} not found") from exc
        try:
            client.connect(
                endpoint.host, port=endpoint.port, username=endpoint.user, pkey=pkey,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                allow_agent=False, look_for_keys=False,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(
                f"{endpoint}: HOST KEY MISMATCH — the host presented "
                f"{exc.key.get_name()} {fingerprint(exc.key.get_name() + ' ' + exc.key.get_base64())} "
                f"but {fingerprint(endpoint.host_key)} is pinned. Refusing to connect: the host was "
                f"reinstalled or someone is intercepting the connection.") from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthenticationFailed(f"{endpoint}: authentication failed: {exc}") from exc
        except paramiko.SSHException as exc:
            client.close()
            if "known_hosts" in str(exc):
                raise HostKeyMismatch(
                    f"{endpoint}: the host did not offer the pinned {pinned.get_name()} key "
                    f"({fingerprint(endpoint.host_key)}); refusing to connect") from exc
            raise SSHError(f"{endpoint}: SSH handshake failed: {exc}") from exc
        except (socket.timeout, TimeoutError) as exc:
            client.close()
            raise HostUnreachable(f"{endpoint}: timed out after {timeout:.0f}s connecting") from exc
        except OSError as exc:
            client.close()
            raise HostUnreachable(f"{endpoint}: cannot connect: {exc.strerror or exc}") from exc
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        return cls(endpoint, client)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def _open(self, command: str) -> paramiko.Channel:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(f"{self.endpoint}: connection was lost")
        chan = transport.open_session(window_size=64 * 1024 * 1024, max_packet_size=32768)
        chan.exec_command(command)
        return chan

    def run(self, command: str | Sequence[str], *, emitter: Emitter | None = None,
            timeout: float | None = None, stdin: bytes | None = None,
            expect_exit: int | Iterable[int] | None = None, tail_lines: int = 200) -> CommandResult:
        """Run a command, streaming stdout/stderr line by line to ``emitter``.

        ``expect_exit``: if given, a different exit code raises ``CommandFailed``.
        ``timeout``: wall-clock seconds; on expiry the channel is closed (the remote
        process loses its pipes) and ``CommandTimeout`` is raised.
        """
        emitter = emitter or NullEmitter()
        cmd = command_string(command)
        out_tail: deque[str] = deque(maxlen=tail_lines)
        err_tail: deque[str] = deque(maxlen=tail_lines)
        out = _LineSplitter("stdout", emitter, out_tail)
        err = _LineSplitter("stderr", emitter, err_tail)
        start = time.monotonic()
        chan = self._open(cmd)
        try:
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            timed_out = not pump(chan, out.feed, err.feed, timeout=timeout, start=start)
            out.flush()
            err.flush()
            exit_code = None if timed_out else chan.recv_exit_status()
        finally:
            chan.close()
        result = CommandResult(cmd, exit_code, time.monotonic() - start,
                               list(out_tail), list(err_tail), timed_out)
        if timed_out:
            raise CommandTimeout(f"{self.endpoint}: command timed out after {timeout}s: {cmd}")
        if expect_exit is not None:
            allowed = {expect_exit} if isinstance(expect_exit, int) else set(expect_exit)
            if exit_code not in allowed:
                last = (err_tail or out_tail or [""])[-1]
                raise CommandFailed(
                    f"{self.endpoint}: exit code {exit_code} (expected {sorted(allowed)}) from: {cmd}"
                    + (f" — {last}" if last else ""), result)
        return result

    def check_output(self, command: str | Sequence[str], *, timeout: float | None = 60,
                     stdin: bytes | None = None) -> bytes:
        """Run a command and return its raw stdout; non-zero exit raises CommandFailed."""
        cmd = command_string(command)
        start = time.monotonic()
        chan = self._open(cmd)
        chunks: list[bytes] = []
        errs: list[bytes] = []
        try:
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            if not pump(chan, chunks.append, errs.append, timeout=timeout, start=start):
                raise CommandTimeout(f"{self.endpoint}: command timed out after {timeout}s: {cmd}")
            code = chan.recv_exit_status()
        finally:
            chan.close()
        if code != 0:
            stderr = b"".join(errs).decode("utf-8", "replace").strip()
            result = CommandResult(cmd, code, time.monotonic() - start, [], stderr.splitlines()[-20:])
            raise CommandFailed(f"{self.endpoint}: exit code {code} from: {cmd}"
                                + (f" — {stderr.splitlines()[-1]}" if stderr else ""), result)
        return b"".join(chunks)

    def open_stream(self, command: str | Sequence[str]) -> paramiko.Channel:
        """Start a command and hand back its channel for bulk reading/writing."""
        return self._open(command_string(command))

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
