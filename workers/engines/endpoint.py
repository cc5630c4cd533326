"""Where a host is and how we know it is that host — without an SSH library.

Every host understudy talks to has a *pinned* host key (``ssh-ed25519 AAAA...``)
recorded when it was registered (or, for a clone, when the clone was fixed up).
This module parses and fingerprints such keys, describes a host as an
``Endpoint`` and defines the SSH error types, so that code which only stores,
validates or shows hosts (the Django models, forms and views) never imports
paramiko. Connecting lives in ``remote`` and ``ssh``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

# Fields after the type string in each key type's public blob (RFC 4253, 5656, 8709, PROTOCOL.u2f).
_KEY_FIELDS = {
    "ssh-ed25519": 1,
    "ssh-rsa": 2,
    "ssh-dss": 4,
    "ecdsa-sha2-nistp256": 2,
    "ecdsa-sha2-nistp384": 2,
    "ecdsa-sha2-nistp521": 2,
    "sk-ssh-ed25519@openssh.com": 2,
    "sk-ecdsa-sha2-nistp256@openssh.com": 3,
}
KEY_TYPES = tuple(_KEY_FIELDS)


class Cancelled(Exception):
    """The work was cancelled (its ``cancelled()`` probe said so); its remote processes were stopped."""


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


@dataclass(frozen=True)
class PublicKey:
    """A parsed OpenSSH public key line: its type, raw blob and comment."""

    type: str
    blob: bytes
    comment: str = ""

    @property
    def base64(self) -> str:
        return base64.b64encode(self.blob).decode("ascii")

    def line(self) -> str:
        """``type base64`` (no comment): the form that is pinned and compared."""
        return f"{self.type} {self.base64}"


def _ssh_strings(blob: bytes) -> list[bytes]:
    """Split an SSH wire-format blob into its length-prefixed fields; ValueError if it does not parse."""
    out, pos = [], 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise ValueError("truncated length field")
        n = int.from_bytes(blob[pos:pos + 4], "big")
        pos += 4
        if pos + n > len(blob):
            raise ValueError("field runs past the end of the key")
        out.append(blob[pos:pos + n])
        pos += n
    return out


def parse_public_key(line: str) -> PublicKey:
    """Parse and check an OpenSSH public key line (``type base64 [comment]``).

    Checked: a known key type, strict base64, and a blob that is well-formed for
    that type and names the same type inside itself. ValueError otherwise.
    """
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key line: {line!r}")
    kind, data = parts[0], parts[1]
    if kind not in _KEY_FIELDS:
        raise ValueError(f"unknown host key type {kind!r} (expected one of {', '.join(KEY_TYPES)})")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"cannot parse host key {kind}: the key is not valid base64") from exc
    try:
        fields = _ssh_strings(blob)
    except ValueError as exc:
        raise ValueError(f"cannot parse host key {kind}: {exc}") from exc
    if not fields or fields[0] != kind.encode():
        inner = fields[0].decode("ascii", "replace") if fields else "nothing"
        raise ValueError(f"cannot parse host key {kind}: the key data says it is {inner!r}")
    if len(fields) - 1 != _KEY_FIELDS[kind]:
        raise ValueError(f"cannot parse host key {kind}: {len(fields) - 1} fields, expected {_KEY_FIELDS[kind]}")
    if kind == "ssh-ed25519" and len(fields[1]) != 32:
        raise ValueError(f"cannot parse host key {kind}: {len(fields[1])}-byte key, expected 32")
    return PublicKey(kind, blob, parts[2].strip() if len(parts) > 2 else "")


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
        """An ``ssh`` argv with strict host key checking against the pinned key.

        ``-F /dev/null``: no ssh_config of this machine (a ProxyCommand, a Match exec or another
        IdentityFile there) takes part; ``--`` before the host: a host that starts with ``-`` is a
        name, never an option."""
        argv = [
            "ssh", "-F", "/dev/null", "-p", str(self.port),
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
        argv += ["-l", self.user, "--", self.host, remote_command]
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


def command_string(command: str | Sequence[str]) -> str:
    """A list is an argv: every element is quoted, never interpreted by the shell."""
    return command if isinstance(command, str) else shlex.join(list(command))
