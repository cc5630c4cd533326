"""One way to run a process on a host and pump its channels.

A ``RemoteProcess`` is a command running on a host, reached either over a
paramiko connection or through the OpenSSH client binary — in both cases with
the host's *pinned* key only: paramiko gets the key in its host-key store and a
``RejectPolicy``, OpenSSH gets a one-line known_hosts file written from the
``Endpoint`` and ``StrictHostKeyChecking=yes``. The same object also runs a
process on this machine (``RemoteProcess.local``), so agents run locally and
remotely through one code path.

What every caller gets, whatever the transport:

* ``write``/``close_stdin`` (``OSError`` once the process is gone) and a byte
  count of everything written (``sent``);
* ``read``/``drain``/``lines`` over stdout, with an optional deadline
  (``CommandTimeout``);
* stderr split into lines for an ``on_stderr_line`` callback, the last lines kept
  in a bounded ``stderr_tail``; stderr is always drained, so a chatty stderr can
  never stall stdout;
* ``wait`` (exit status), ``kill`` (drop it now: the remote side sees EOF/SIGHUP;
  safe from any thread, so it doubles as the cancel hook) and ``close``.

Why two transports: paramiko starts a command ~2x faster (no process to fork,
a connection can be reused), the OpenSSH client moves bulk data ~2.5x faster on
these machines (bench/bench_sync.py, docs/sync.md). ``pick_transport`` chooses
between them for "auto".
"""
from __future__ import annotations

import abc
import os
import select
import socket
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

import paramiko

from .endpoint import (AuthenticationFailed, CommandTimeout, Endpoint, HostKeyMismatch, HostUnreachable, SSHError,
                       command_string, fingerprint, known_hosts_name, parse_public_key)

TRANSPORTS = ("auto", "openssh", "paramiko")
# Measured here (bench/bench_sync.py, docs/sync.md): starting an agent costs 0.17-0.21 s with paramiko
# (in-process) vs 0.30-0.36 s with the OpenSSH client, while a bulk stream runs 74-88 MiB/s through
# OpenSSH vs 34-74 MiB/s through paramiko. Break-even is ~10 MiB of data; "auto" takes paramiko unless
# the caller expects to move more than this.
AUTO_OPENSSH_FROM_BYTES = 32 << 20
READ_SIZE = 1 << 20
STDERR_TAIL = 20
# Longest output line kept whole; longer ones go on in pieces marked with LINE_CONTINUES.
MAX_LINE = 64 << 10
LINE_CONTINUES = " [line continues]".encode()
# Longest record our own agents' protocols allow on one line (their replies and states are a few
# hundred bytes; the longest is a manifest entry listing a big file's chunk digests). A host that
# sends more is not speaking the protocol: the read stops instead of growing a buffer.
MAX_RECORD = 64 << 20
# A remote command first reports its process group on stderr (sshd makes the session's shell a
# session and group leader), so a cancel can stop the whole group on the host, not only drop our
# end of the connection: a command that never reads its stdin would otherwise run on.
PGID_MARK = "understudy-pgid"
_REPORT_PGID = f"printf '{PGID_MARK} %s\\n' $$ >&2; "
# How long a cancelled remote process group gets after SIGTERM before SIGKILL.
TERM_GRACE = 3.0
CANCEL_POLL = 0.5
# How often a paramiko reader with nothing to read looks at the exit status and the deadline.
_POLL = 0.1
_SEND_SLICE = 1 << 16   # at most what one Channel.send puts in packets: no copy of the whole rest
# sshd sends the exit status as soon as the command exits, possibly before the rest of its output
# (OpenSSH session.c: "there could be some more data waiting in the pipe"), so stdout ends at EOF.
# Only when a background child keeps stdout open after the exit does the stream never end: it is
# taken as ended once it has been quiet this long after the exit.
EXIT_GRACE = 1.0


def pick_transport(transport: str, planned_bytes: int) -> str:
    """"openssh" or "paramiko"; "auto" picks by how many bytes the caller expects to move."""
    if transport == "auto":
        return "openssh" if planned_bytes >= AUTO_OPENSSH_FROM_BYTES else "paramiko"
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be auto, openssh or paramiko, not {transport!r}")
    return transport


# ---------------------------------------------------------------------------- connecting
def connect(endpoint: Endpoint, *, timeout: float = 10.0) -> paramiko.SSHClient:
    """An authenticated paramiko client that accepts only the endpoint's pinned host key."""
    if not endpoint.host_key.strip():
        raise HostKeyMismatch(
            f"{endpoint}: no host key is pinned for this host; register its key "
            f"(check the fingerprint out of band) before connecting")
    pinned = parse_public_key(endpoint.host_key)
    client = paramiko.SSHClient()
    client.get_host_keys().add(known_hosts_name(endpoint.host, endpoint.port), pinned.type,
                               paramiko.PKey.from_type_string(pinned.type, pinned.blob))
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
            f"{endpoint}: HOST KEY MISMATCH (host key changed) — the host presented "
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
                f"{endpoint}: host key changed: the host did not offer the pinned {pinned.type} key "
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
    return client


# ---------------------------------------------------------------------------- lines
class LineTooLong(SSHError):
    """A host sent a record longer than our agents' protocol allows (see ``MAX_RECORD``)."""


class LineSplitter:
    """Bytes in, complete lines (without the newline) out to ``on_line``; a final partial line on ``flush``.

    A line longer than ``max_line`` bytes (a command printing no newline) is handed on in pieces of
    ``max_line`` bytes, each but the last ending with ``LINE_CONTINUES``, so the buffer stays bounded
    whatever the command prints. ``split=False`` (our own agents' records): such a line raises
    ``LineTooLong`` instead.
    """

    def __init__(self, on_line: Callable[[bytes], None], max_line: int = MAX_LINE, *, split: bool = True) -> None:
        self.on_line = on_line
        self.max_line = max_line
        self.split = split     # False: a longer line is a protocol error (LineTooLong), not pieces
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        if b"\n" in data:
            *lines, self.buf = self.buf.split(b"\n")
            for raw in lines:
                self._emit(raw)
        while len(self.buf) > self.max_line:
            self._too_long()
            piece, self.buf = self.buf[:self.max_line], self.buf[self.max_line:]
            self.on_line(piece + LINE_CONTINUES)

    def _too_long(self) -> None:
        if not self.split:
            self.buf = b""
            raise LineTooLong(f"the remote process sent a line longer than {self.max_line:,} bytes")

    def _emit(self, raw: bytes) -> None:
        while len(raw) > self.max_line:
            self._too_long()
            self.on_line(raw[:self.max_line] + LINE_CONTINUES)
            raw = raw[self.max_line:]
        self.on_line(raw)

    def flush(self) -> None:
        if self.buf:
            raw, self.buf = self.buf, b""
            self._emit(raw)


def text(raw: bytes) -> str:
    """One output line as text: UTF-8 (undecodable bytes replaced), a trailing CR dropped."""
    return raw.rstrip(b"\r").decode("utf-8", "replace")


class PipeLines(threading.Thread):
    """Reads a pipe to its end in the background, handing each line (bytes, no newline) to ``on_line``."""

    def __init__(self, pipe: IO[bytes], on_line: Callable[[bytes], None]) -> None:
        super().__init__(daemon=True)
        self.fd = pipe.fileno()
        self.splitter = LineSplitter(on_line)

    def run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                break
            if not data:
                break
            self.splitter.feed(data)
        self.splitter.flush()


# ---------------------------------------------------------------------------- processes
class RemoteProcess(abc.ABC):
    """A command running on a host (or on this machine): see the module docstring."""

    transport = ""

    def __init__(self, label: str, command: str, on_stderr_line: Callable[[str], None] | None,
                 stderr_lines: int) -> None:
        self.label, self.command = label, command
        self.sent = 0
        self._code: int | None = None
        self.killed = False             # kill() was called: the end was ours, not the connection's
        self._done = False
        self._tail: deque[str] = deque(maxlen=stderr_lines)
        self._on_stderr_line = on_stderr_line
        self._stderr = LineSplitter(self._stderr_line)
        self._stderr_lock = threading.Lock()
        self.endpoint: Endpoint | None = None   # a remote process: where terminate() reaches its group
        self.remote_pgid: int | None = None
        self._pgid_seen = threading.Event()

    # -- starting
    @classmethod
    def start(cls, endpoint: Endpoint, command: str | Sequence[str], *, transport: str = "paramiko",
              client: paramiko.SSHClient | None = None, on_stderr_line: Callable[[str], None] | None = None,
              stderr_lines: int = STDERR_TAIL, connect_timeout: float = 10.0) -> "RemoteProcess":
        """Start ``command`` on ``endpoint``. ``client``: an open paramiko connection to reuse
        (paramiko transport only; without it a connection is made and closed with the process)."""
        cmd = command_string(command)
        if pick_transport(transport, 0) == "openssh":
            proc: RemoteProcess = _PipeProcess.openssh(endpoint, cmd, on_stderr_line, stderr_lines)
        else:
            proc = _ChannelProcess(endpoint, cmd, client, on_stderr_line, stderr_lines, connect_timeout)
        proc.endpoint = endpoint
        return proc

    @classmethod
    def local(cls, argv: Sequence[str], *, on_stderr_line: Callable[[str], None] | None = None,
              stderr_lines: int = STDERR_TAIL, env: dict[str, str] | None = None) -> "RemoteProcess":
        """Run ``argv`` on this machine with the same interface."""
        return _PipeProcess(list(argv), "local", command_string(list(argv)), on_stderr_line, stderr_lines, env=env)

    # -- stderr
    def _stderr_line(self, raw: bytes) -> None:
        line = text(raw)
        if self.remote_pgid is None and line.startswith(PGID_MARK + " "):
            try:
                self.remote_pgid = int(line.split()[1])
            except (IndexError, ValueError):
                pass
            self._pgid_seen.set()
            return
        self._tail.append(line)
        if self._on_stderr_line is not None:
            self._on_stderr_line(line)

    @property
    def stderr_tail(self) -> list[str]:
        return list(self._tail)

    @property
    def exit_code(self) -> int | None:
        """The exit status ``wait`` returned (None before that)."""
        return self._code

    # -- stdin
    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send bytes to the process's stdin (``OSError`` when it is gone)."""
        ...

    @abc.abstractmethod
    def close_stdin(self) -> None:
        """EOF for the process; never raises."""
        ...

    # -- stdout
    @abc.abstractmethod
    def read(self, n: int = READ_SIZE, *, deadline: float | None = None) -> bytes:
        """Up to ``n`` bytes of stdout, b"" at its end. ``deadline`` (``time.monotonic()``):
        ``CommandTimeout`` if it passes while waiting for data."""
        ...

    def drain(self, on_data: Callable[[bytes], None], *, deadline: float | None = None) -> None:
        """Feed stdout to ``on_data`` until it ends (``CommandTimeout`` past ``deadline``)."""
        while True:
            data = self.read(READ_SIZE, deadline=deadline)
            if not data:
                return
            on_data(data)

    def lines(self, max_line: int = MAX_RECORD) -> Iterator[bytes]:
        """stdout line by line (bytes, without the newline); a final partial line is dropped. A line
        longer than ``max_line`` raises ``LineTooLong``: this reads our agents' records, and a host
        that sends more is not speaking their protocol."""
        buf = b""
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line
            if len(buf) > max_line:
                raise LineTooLong(f"{self.endpoint or 'the process'}: sent a line longer than {max_line:,} bytes")
            data = self.read(65536)
            if not data:
                return
            buf += data

    def _time_left(self, deadline: float | None) -> float | None:
        """Seconds left until ``deadline`` (None: no deadline); CommandTimeout once it passed."""
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._timeout()
        return left

    def _timeout(self) -> CommandTimeout:
        return CommandTimeout(f"{self.label}: no end of output before the deadline: {self.command}")

    # -- the end
    def wait(self) -> int | None:
        """The exit status once the process ended (its stderr is then read to the end too).
        Releases the connection: the object is done afterwards."""
        if not self._done:
            self._code = self._exit_status()
            self.close()
        return self._code

    def kill(self) -> None:
        """Stop it now (drop the connection / SIGKILL the client); safe from any thread."""
        self.killed = True
        self._drop()

    def terminate(self, *, grace: float = TERM_GRACE) -> None:
        """Stop the process on its host, then drop it: SIGTERM to its process group over a new
        connection, SIGKILL after ``grace`` seconds if it still runs. Safe from any thread; this is
        the cancel hook (an agent stops at its next safe point on SIGTERM)."""
        if self.endpoint is not None and not self._done:
            self._pump_for_pgid()
            pgid = self.remote_pgid
            if pgid is not None and pgid > 1:
                steps = max(1, int(grace / 0.1))
                # "kill -SIG -PGID", not "kill -SIG -- -PGID": dash's kill does not take "--"
                script = (f"kill -TERM -{pgid} 2>/dev/null; i=0; while kill -0 -{pgid} 2>/dev/null && "
                          f"[ $i -lt {steps} ]; do sleep 0.1; i=$((i+1)); done; kill -KILL -{pgid} 2>/dev/null; "
                          f"true")
                try:
                    client = connect(self.endpoint)
                    try:
                        _stdin, out, _err = client.exec_command(script, timeout=grace + 10)
                        out.channel.recv_exit_status()
                    finally:
                        client.close()
                except (SSHError, OSError, paramiko.SSHException, EOFError):
                    pass  # the host is unreachable: dropping the connection below is all that is left
        self.kill()

    def _pump_for_pgid(self) -> None:
        """Over paramiko, stderr is read by the stdout reader: read what has come for the pgid line."""
        self._pgid_seen.wait(0.5)

    def close(self) -> None:
        """Release everything; kills the process if it still runs. Idempotent."""
        if self._done:
            return
        self._done = True
        self._release()

    @abc.abstractmethod
    def _exit_status(self) -> int | None:
        ...

    @abc.abstractmethod
    def _drop(self) -> None:
        """Stop the process without waiting for it."""
        ...

    @abc.abstractmethod
    def _release(self) -> None:
        """Read what is left of stderr, stop the process if needed, free the connection."""
        ...

    @property
    @abc.abstractmethod
    def lost(self) -> bool:
        """After ``wait``: the connection failed or dropped, so there is no exit status of the
        command (never after ``kill``: then the end was the caller's)."""
        ...

    @property
    def stdout_fd(self) -> int | None:
        """A pipe fd of stdout for zero-copy consumers (splice); None over paramiko."""
        return None

    def __enter__(self) -> "RemoteProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ChannelProcess(RemoteProcess):
    """Over a paramiko session channel. stderr is drained by whoever reads stdout (paramiko buffers
    both streams in memory, so no thread is needed), and once more at the end. No ``select`` on
    the channel: its wake-up pipe costs a syscall per packet, ~25% of a paramiko bulk stream here."""

    transport = "paramiko"

    def __init__(self, endpoint: Endpoint, command: str, client: paramiko.SSHClient | None,
                 on_stderr_line: Callable[[str], None] | None, stderr_lines: int, connect_timeout: float) -> None:
        super().__init__(str(endpoint), command, on_stderr_line, stderr_lines)
        self._own = client is None
        self._quiet_since: float | None = None
        self.client = connect(endpoint, timeout=connect_timeout) if client is None else client
        try:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                raise HostUnreachable(f"{endpoint}: connection was lost")
            try:
                self.chan = transport.open_session(window_size=64 * 1024 * 1024, max_packet_size=32768)
                self.chan.exec_command(_REPORT_PGID + command)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise HostUnreachable(f"{endpoint}: cannot start a command: {exc}") from exc
            # reads and writes wake up this often to look at stderr, the exit status and the deadline
            self.chan.settimeout(_POLL)
        except BaseException:
            if self._own:
                self.client.close()
            raise

    def _pump_stderr(self) -> None:
        with self._stderr_lock:
            while self.chan.recv_stderr_ready():
                self._stderr.feed(self.chan.recv_stderr(65536))

    def _pump_for_pgid(self) -> None:
        deadline = time.monotonic() + 0.5
        while self.remote_pgid is None and time.monotonic() < deadline:
            try:
                self._pump_stderr()
            except (OSError, EOFError):
                return
            if self.remote_pgid is None:
                time.sleep(0.02)

    def write(self, data: bytes) -> None:
        # Channel.send waits at most the channel timeout (_POLL) for window space and then sends
        # nothing: keep offering, as sendall would, one packet-sized slice at a time.
        pos = 0
        try:
            while pos < len(data):
                try:
                    pos += self.chan.send(data[pos:pos + _SEND_SLICE])
                except socket.timeout:
                    continue
        except EOFError as exc:
            raise BrokenPipeError(f"{self.label}: the remote side closed its input") from exc
        self.sent += len(data)

    def close_stdin(self) -> None:
        try:
            self.chan.shutdown_write()
        except (OSError, EOFError):
            pass

    def read(self, n: int = READ_SIZE, *, deadline: float | None = None) -> bytes:
        chan = self.chan
        while True:
            self._pump_stderr()
            try:
                data = chan.recv(n)  # waits at most _POLL; b"" once EOF came and the buffer is empty
            except socket.timeout:
                if chan.exit_status_ready():
                    now = time.monotonic()
                    if self._quiet_since is None:
                        self._quiet_since = now
                    elif now - self._quiet_since >= EXIT_GRACE:
                        return b""  # a background child holds stdout open: nothing more is the command's
                self._time_left(deadline)
                continue
            self._quiet_since = None
            if not data:
                self._pump_stderr()  # stderr that came with the EOF, before anyone waits
            return data

    def _exit_status(self) -> int | None:
        return self.chan.recv_exit_status()

    def _drop(self) -> None:
        try:
            self.chan.close()
        except (OSError, EOFError):
            pass  # the connection is already gone: so is the command's channel
        if self._own:
            self.client.close()

    def _release(self) -> None:
        try:
            self._pump_stderr()  # what is buffered stays readable after the channel closed
        except (OSError, EOFError):
            pass
        with self._stderr_lock:
            self._stderr.flush()
        self._drop()

    @property
    def lost(self) -> bool:
        # paramiko reports -1 when the channel closed without an exit status
        return not self.killed and (self._code is None or self._code == -1)


class _PipeProcess(RemoteProcess):
    """A child process with pipes: the OpenSSH client, or a command on this machine.
    stderr is read by a background thread (a full stderr pipe would block the child)."""

    def __init__(self, argv: list[str], transport: str, command: str, on_stderr_line: Callable[[str], None] | None,
                 stderr_lines: int, *, label: str = "local", known_hosts: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(label, command, on_stderr_line, stderr_lines)
        self.transport = transport
        self.known_hosts = known_hosts
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, bufsize=0, env=env)
        except BaseException:
            self._forget_known_hosts()
            raise
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self._err = PipeLines(self.proc.stderr, self._stderr_line)
        self._err.start()

    @classmethod
    def openssh(cls, endpoint: Endpoint, command: str, on_stderr_line: Callable[[str], None] | None,
                stderr_lines: int) -> "_PipeProcess":
        kh = endpoint.write_known_hosts()
        return cls(endpoint.openssh_argv(_REPORT_PGID + command, kh), "openssh", command, on_stderr_line,
                   stderr_lines, label=str(endpoint), known_hosts=kh)

    def _forget_known_hosts(self) -> None:
        if self.known_hosts is not None:
            self.known_hosts.unlink(missing_ok=True)

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        view = memoryview(data)
        while view:
            view = view[self.proc.stdin.write(view):]
        self.sent += len(data)

    def close_stdin(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass

    def read(self, n: int = READ_SIZE, *, deadline: float | None = None) -> bytes:
        fd = self.stdout_fd
        if fd is None:
            return b""
        try:
            if deadline is not None and not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise self._timeout()
            return os.read(fd, n)
        except (OSError, ValueError):
            return b""  # closed under us by close() from another thread

    @property
    def stdout_fd(self) -> int | None:
        out = self.proc.stdout
        return None if out is None or out.closed else out.fileno()

    def _exit_status(self) -> int | None:
        return self.proc.wait()

    def _drop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    def _release(self) -> None:
        self._drop()
        self._code = self.proc.wait() if self._code is None else self._code
        self._err.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        self._forget_known_hosts()

    @property
    def lost(self) -> bool:
        # the OpenSSH client's own failures (connect, host key, dropped connection) exit 255
        return self.transport == "openssh" and not self.killed and self._code == 255


# ---------------------------------------------------------------------------- cancelling
class CancelWatch:
    """Polls ``cancelled()`` in the background while work runs; once it says yes, every process
    handed to ``track`` is terminated on its host (``RemoteProcess.terminate``) and ``fired`` is
    set. ``cancelled=None`` watches nothing. Use as a context manager around the work."""

    def __init__(self, cancelled: Callable[[], bool] | None, *, interval: float = CANCEL_POLL) -> None:
        self.cancelled, self.interval = cancelled, interval
        self.fired = threading.Event()
        self._stop = threading.Event()
        self._procs: list[RemoteProcess] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def track(self, proc: RemoteProcess) -> RemoteProcess:
        with self._lock:
            self._procs.append(proc)
            fired = self.fired.is_set()
        if fired:
            proc.terminate()
        return proc

    def check(self) -> bool:
        """Ask now (between passes, files, …); True once cancelled."""
        if not self.fired.is_set() and self.cancelled is not None and self.cancelled():
            self._fire()
        return self.fired.is_set()

    def _fire(self) -> None:
        self.fired.set()
        with self._lock:
            procs = list(self._procs)
        threads = [threading.Thread(target=p.terminate, daemon=True) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TERM_GRACE + 15)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.check():
                    return
            except Exception:  # noqa: BLE001 — a failing probe must not kill the work it watches
                continue

    def __enter__(self) -> "CancelWatch":
        self._stop.clear()  # one watch may cover several stretches of work (live sync passes)
        if self.cancelled is not None and not self.fired.is_set():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TERM_GRACE + 20)
