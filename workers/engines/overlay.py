"""Copy-on-write overlays of a clone's disk, and editing files inside a disk image.

A dress rehearsal boots two VMs from one point-in-time copy: the workbench and the
stand-in of production. Both run on qcow2 overlays of the same read-only base image,
so the second VM costs seconds and no second copy of the data. The stand-in needs its
own identity (hostname, SSH host keys) written into its overlay before it boots.

Files are written with ``debugfs`` (e2fsprogs) through a raw view of the overlay that
``qemu-storage-daemon`` exports over FUSE; no kernel mount and no loop or nbd device
is needed. debugfs works inside the image's filesystem only: a symlink the production
host left in the tree resolves inside the image, never on the hypervisor.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .image import ImageError, ToolMissingError

EXPORT_TIMEOUT = 15.0   # seconds for qemu-storage-daemon to publish the FUSE export


@dataclass(frozen=True)
class ImageFile:
    """A regular file to place in the image (replacing whatever is at ``path``)."""
    path: str            # absolute path inside the image, e.g. "/etc/hostname"
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if not found:
        raise ToolMissingError(f"{name} not found: apt-get install {package}")
    return found


def create_overlay(base: Path, overlay: Path, backing_format: str = "qcow2") -> Path:
    """A qcow2 overlay whose reads fall through to ``base`` (qcow2 or raw) and whose writes stay in it."""
    if backing_format not in ("qcow2", "raw"):
        raise ImageError(f"backing format must be qcow2 or raw, not {backing_format!r}")
    qemu_img = _tool("qemu-img", "qemu-utils")
    proc = subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-F", backing_format, "-b", str(base),
                           str(overlay)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        overlay.unlink(missing_ok=True)
        raise ImageError(f"qemu-img create overlay {overlay} on {base} failed: {proc.stderr.strip()}")
    os.chmod(overlay, 0o600)
    return overlay


def _debugfs_path(path: str) -> str:
    """debugfs splits its command lines on blanks and has no quoting we can rely on:
    accept only the plain absolute paths understudy itself chooses."""
    if not path.startswith("/") or any(c.isspace() or c in '"\\' for c in path) or "/../" in path + "/":
        raise ImageError(f"refusing to edit {path!r} in an image: not a plain absolute path")
    return path


class _RawExport:
    """A raw, writable view of a qcow2 image at a temporary file (FUSE export)."""

    def __init__(self, image: Path, workdir: Path) -> None:
        self.image, self.mountpoint = image, workdir / "export.raw"
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "qsd.log"

    def __enter__(self) -> Path:
        qsd = _tool("qemu-storage-daemon", "qemu-system-common")
        if not Path("/dev/fuse").exists():
            raise ImageError("/dev/fuse is missing: editing a disk image needs FUSE (modprobe fuse)")
        self.mountpoint.touch(mode=0o600)
        self.proc = subprocess.Popen(
            [qsd, "--blockdev", f"driver=file,node-name=file0,filename={self.image}",
             "--blockdev", "driver=qcow2,node-name=disk0,file=file0",
             "--export", f"type=fuse,id=export0,node-name=disk0,mountpoint={self.mountpoint},writable=on"],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + EXPORT_TIMEOUT
        while not self._mounted():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._stop()
                raise ImageError(f"qemu-storage-daemon could not export {self.image}: "
                                 f"{self.log.read_text(errors='replace').strip()[-500:] or 'timed out'}")
            time.sleep(0.05)
        return self.mountpoint

    def _mounted(self) -> bool:
        target = os.fsencode(str(self.mountpoint))
        with open("/proc/self/mountinfo", "rb") as f:
            return any(line.split()[4] == target for line in f if len(line.split()) > 4)

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # qemu-storage-daemon flushes and unmounts on SIGTERM
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._mounted():
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)

    def __exit__(self, *exc: object) -> None:
        self._stop()


def _debugfs(raw: Path, script: str, *, write: bool) -> str:
    debugfs = _tool("debugfs", "e2fsprogs")
    argv = [debugfs] + (["-w"] if write else []) + ["-f", "-", str(raw)]
    proc = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ImageError(f"debugfs on the image failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def edit_image(image: Path, files: list[ImageFile], *, read: list[str] = ()) -> dict[str, bytes]:
    """Replace ``files`` inside the ext4 filesystem of the qcow2 ``image`` and return the
    content of the ``read`` paths (read before anything is written; missing: absent from
    the result). Every written file is read back and compared: a failed write raises."""
    with tempfile.TemporaryDirectory(prefix="understudy-edit-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o700)
        with _RawExport(image, work) as raw:
            found: dict[str, bytes] = {}
            for path in read:
                out = work / "read.out"
                _debugfs(raw, f"dump -p {_debugfs_path(path)} {out}\n", write=False)
                if out.exists():
                    found[path] = out.read_bytes()
                    out.unlink()
            lines = []
            for i, f in enumerate(files):
                src = work / f"file{i}"
                src.write_bytes(f.content)
                p = _debugfs_path(f.path)
                lines += [f"rm {p}", f"write {src} {p}", f"sif {p} mode 0{0o100000 | f.mode:o}",
                          f"sif {p} uid {f.uid}", f"sif {p} gid {f.gid}"]
            if lines:
                _debugfs(raw, "\n".join(lines) + "\n", write=True)
            for i, f in enumerate(files):
                back = work / f"back{i}"
                _debugfs(raw, f"dump {_debugfs_path(f.path)} {back}\n", write=False)
                if not back.exists() or back.read_bytes() != f.content:
                    raise ImageError(f"writing {f.path} into {image} did not take (read back differs)")
        return found
