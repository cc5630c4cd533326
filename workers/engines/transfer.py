"""Copy one file from one host to another through the worker.

The clone has no route to production (by design), so bytes travel
production -> worker -> clone over two SSH sessions. The destination is written
to ``<dest>.part`` and renamed only after the byte count and, when given, the
SHA-256 match: a missing, truncated or corrupted archive never appears under its
final name.
"""
from __future__ import annotations

import hashlib
import posixpath
import shlex
import time
from dataclasses import asdict, dataclass

from .endpoint import CommandFailed, SSHError
from .events import Emitter, NullEmitter
from .ssh import Session

CHUNK = 1 << 20


class TransferError(SSHError):
    pass


@dataclass
class TransferResult:
    source: str
    dest: str
    bytes: int
    sha256: str
    seconds: float
    verified: bool

    def as_dict(self) -> dict:
        d = asdict(self)
        d["rate_bytes_per_s"] = round(self.bytes / self.seconds) if self.seconds > 0 else None
        return d


def remote_size(session: Session, path: str) -> int:
    try:
        out = session.check_output(["stat", "-L", "-c", "%s %F", path], timeout=30).decode().split(" ", 1)
    except CommandFailed as exc:
        last = (exc.result.stderr_tail or [""])[-1]
        raise TransferError(f"{session.endpoint}: {path} cannot be read: {last or 'stat failed'}") from exc
    if "regular" not in out[1]:
        raise TransferError(f"{session.endpoint}: {path} is a {out[1].strip()}, not a regular file")
    return int(out[0])


def copy_file(src: Session, src_path: str, dst: Session, dst_path: str, *, emitter: Emitter | None = None,
              expected_sha256: str | None = None) -> TransferResult:
    emitter = emitter or NullEmitter()
    total = remote_size(src, src_path)
    part = dst_path + ".part"
    dst.check_output(["mkdir", "-p", posixpath.dirname(dst_path) or "/"], timeout=30)
    emitter.phase("copy")
    emitter.log(f"copying {src.endpoint}:{src_path} ({total} bytes) -> {dst.endpoint}:{dst_path}", "info")
    start = time.monotonic()
    digest = hashlib.sha256()
    done = 0
    last_report = 0.0
    with src.start(["cat", "--", src_path]) as reader, dst.start(f"cat > {shlex.quote(part)}") as writer:
        try:
            reader.close_stdin()
            while True:
                data = reader.read(CHUNK)
                if not data:
                    break
                digest.update(data)
                writer.write(data)
                done += len(data)
                now = time.monotonic()
                if now - last_report > 0.25:
                    emitter.progress(done, total, "bytes")
                    last_report = now
            writer.close_stdin()
            src_code = reader.wait()
            dst_code = writer.wait()
        except (OSError, EOFError) as exc:
            _remove(dst, part)
            raise TransferError(f"connection lost after {done} of {total} bytes: {exc}") from exc
    dst_err = "\n".join(writer.stderr_tail).strip()
    src_err = "\n".join(reader.stderr_tail).strip()
    emitter.progress(done, total, "bytes")
    if src_code != 0:
        _remove(dst, part)
        raise TransferError(f"reading {src_path} on {src.endpoint} failed (exit {src_code}): {src_err}")
    if dst_code != 0:
        _remove(dst, part)
        raise TransferError(f"writing {part} on {dst.endpoint} failed (exit {dst_code}): {dst_err}")
    written = int(dst.check_output(["stat", "-c", "%s", part], timeout=30).decode())
    if done != total or written != total:
        _remove(dst, part)
        raise TransferError(f"{src_path} is {total} bytes but {done} were read and {written} written; "
                            f"the file changed or the copy was cut short")
    sha = digest.hexdigest()
    if expected_sha256 and sha != expected_sha256.lower():
        _remove(dst, part)
        raise TransferError(f"checksum mismatch for {src_path}: expected {expected_sha256}, got {sha} "
                            f"(the archive is truncated or corrupt)")
    dst.check_output(["mv", "-f", "--", part, dst_path], timeout=30)
    seconds = time.monotonic() - start
    emitter.log(f"copied {done} bytes in {seconds:.1f}s, sha256 {sha}"
                + (" (matches the expected checksum)" if expected_sha256 else ""), "info")
    return TransferResult(f"{src.endpoint}:{src_path}", f"{dst.endpoint}:{dst_path}", done, sha, seconds,
                          bool(expected_sha256))


def unpack_archive(session: Session, archive: str, dest_dir: str, *, emitter: Emitter | None = None,
                   timeout: float = 4 * 3600) -> None:
    """Unpack a tar archive (any compression tar detects) on the host; a broken archive fails clearly."""
    emitter = emitter or NullEmitter()
    emitter.phase("unpack")
    session.check_output(["mkdir", "-p", dest_dir], timeout=30)
    try:
        session.run(["tar", "-xf", archive, "-C", dest_dir], emitter=emitter, timeout=timeout, expect_exit=0)
    except CommandFailed as exc:
        raise TransferError(f"unpacking {archive} into {dest_dir} failed: the archive is truncated or corrupt "
                            f"({(exc.result.stderr_tail or [''])[-1]})") from exc


def _remove(session: Session, path: str) -> None:
    try:
        session.check_output(["rm", "-f", "--", path], timeout=30)
    except SSHError:
        pass  # the connection may be what failed; the .part name marks the file as incomplete
