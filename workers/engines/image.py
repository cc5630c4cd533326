"""Build a clone's disk image.

Two ways, chosen by the clone:

* **mounted image** (``MountedImage``; root with loop devices): a sparse raw file is made
  an ext4 file system and loop-mounted (``nosuid,nodev``); the tar stream is extracted
  straight into it, then it is unmounted and becomes the read-only base of the clone's
  qcow2 overlay. The hypervisor holds the host's data once (peak ~ the host's used bytes).
* **staging directory** (``build_disk``; the fallback): ``mke2fs -t ext4 -d STAGING``
  populates a fresh ext4 file system straight from a directory (no loop mounts, no
  root-only tricks), then ``qemu-img convert -O qcow2`` makes it a compact qcow2. The
  data exists up to three times at once (staging, raw, qcow2).

Failures never leave partial images behind: outputs are written under a
``.partial`` name and renamed only when complete.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .confined import ConfinementError, Root
from .events import Emitter, NullEmitter

MiB = 1 << 20
BLOCK = 4096
DEFAULT_HEADROOM = 512 * MiB     # room to rehearse a repair (logs, packages) in the clone
MIN_IMAGE_SIZE = 64 * MiB
# ext4 metadata beyond file data: inode tables, bitmaps, group descriptors,
# reserved GDT blocks, and the journal (mke2fs picks 4..128 MiB by size).
_METADATA_FRACTION = 0.06


class ImageError(Exception):
    pass


class ToolMissingError(ImageError):
    pass


class DiskFullError(ImageError):
    pass


@dataclass(frozen=True)
class TreeSize:
    bytes: int        # bytes allocated on ext4 (4 KiB blocks), hard links counted once
    apparent: int     # sum of st_size
    files: int        # inodes needed (files, dirs, symlinks, devices...)


@dataclass(frozen=True)
class DiskImage:
    path: Path
    virtual_size: int
    qcow2_bytes: int
    tree: TreeSize
    mkfs_seconds: float
    convert_seconds: float


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}", f"/usr/bin/{tool}") if os.access(p, os.X_OK)), None)
    if path is None:
        raise ToolMissingError(f"'{tool}' not found; apt-get install -y {package}")
    return path


def estimate_tree_size(root: Path) -> TreeSize:
    """Size the tree would take on ext4, without following symlinks or
    counting hard links twice. Rounded up per file to 4 KiB blocks."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"staging dir {root} does not exist or is not a directory")
    seen: set[tuple[int, int]] = set()
    total = apparent = files = 0
    stack = [str(root)]
    while stack:
        d = stack.pop()
        files += 1
        total += BLOCK  # a directory takes at least one block
        try:
            it = os.scandir(d)
        except OSError as e:
            raise ImageError(f"cannot read {d}: {e.strerror}") from e
        with it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1:
                    if key in seen:
                        continue
                    seen.add(key)
                files += 1
                apparent += st.st_size
                if entry.is_symlink():
                    # symlinks < 60 bytes live in the inode itself
                    total += 0 if st.st_size < 60 else BLOCK
                elif entry.is_file(follow_symlinks=False):
                    # sparse files: count allocated blocks, not the hole
                    alloc = min(st.st_size, st.st_blocks * 512)
                    total += -(-alloc // BLOCK) * BLOCK
    return TreeSize(bytes=total, apparent=apparent, files=files)


def image_size_for(tree: TreeSize, headroom: int = DEFAULT_HEADROOM) -> int:
    size = int(tree.bytes * (1 + _METADATA_FRACTION)) + tree.files * 256 + headroom
    size = max(size, MIN_IMAGE_SIZE)
    return -(-size // MiB) * MiB


def _inode_count(tree: TreeSize, size: int) -> int:
    # mke2fs's default (one inode per 16 KiB) is too few for trees of many
    # small files (e.g. /usr/share/locale); give the clone 50% spare inodes.
    return max(size // 16384, int(tree.files * 1.5) + 4096)


def _unlink_quietly(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _explain_failure(tool: str, rc: int, stderr: str, out_dir: Path) -> ImageError:
    low = stderr.lower()
    if "no space left" in low or "could not allocate block" in low or "enospc" in low:
        free = shutil.disk_usage(out_dir).free
        return DiskFullError(f"{tool} ran out of space (free in {out_dir}: {free // MiB} MiB): "
                             f"{stderr.strip()[-400:]}")
    return ImageError(f"{tool} failed with exit code {rc}: {stderr.strip()[-800:]}")


def mke2fs_argv(mke2fs: str, image: Path, size: int, inodes: int, label: str,
                source_dir: Path | None = None) -> list[str]:
    # -b 4096: mke2fs would pick 1 KiB blocks for small images ("small" type),
    # which our estimate does not model and which no real server uses.
    return ([mke2fs, "-q", "-F", "-t", "ext4", "-b", "4096", "-L", label, "-N", str(inodes)]
            + (["-d", str(source_dir)] if source_dir is not None else [])
            # no reserved-for-root blocks: the clone is a scratch copy;
            # lazy init would make the guest kernel zero inode tables in the
            # background at boot, slow under TCG
            + ["-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image), str(size // 1024) + "k"])


def build_ext4(staging_dir: Path, image_path: Path, *, headroom: int = DEFAULT_HEADROOM,
               label: str = "clone-root", size: int | None = None,
               tree: TreeSize | None = None) -> int:
    """Create a raw ext4 image at ``image_path`` holding ``staging_dir``.

    Size is used space + headroom (min 64 MiB) unless ``size`` is given.
    Returns the image size in bytes. Nothing is left at ``image_path`` on failure.
    """
    mke2fs = _require("mke2fs", "e2fsprogs")
    staging_dir, image_path = Path(staging_dir), Path(image_path)
    tree = tree or estimate_tree_size(staging_dir)
    size = size or image_size_for(tree, headroom)
    if size < tree.bytes:
        raise ImageError(f"image size {size // MiB} MiB is too small for {staging_dir} "
                         f"({tree.bytes / MiB:.1f} MiB of data)")
    if len(label) > 16:
        raise ImageError(f"ext4 label {label!r} is longer than 16 characters")
    image_path.parent.mkdir(parents=True, exist_ok=True)
    # The raw file is sparse: only written blocks count, i.e. ~ the tree size.
    free = shutil.disk_usage(image_path.parent).free
    if tree.bytes + 64 * MiB > free:
        raise DiskFullError(f"not enough space in {image_path.parent} for a {tree.bytes // MiB} MiB "
                            f"image: {free // MiB} MiB free")
    partial = image_path.with_name(image_path.name + ".partial")
    _unlink_quietly(partial, image_path)
    # created private before mke2fs writes production's files into it
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    cmd = mke2fs_argv(mke2fs, partial, size, _inode_count(tree, size), label, staging_dir)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    except BaseException:
        _unlink_quietly(partial)
        raise
    if proc.returncode != 0:
        _unlink_quietly(partial)
        raise _explain_failure("mke2fs", proc.returncode, proc.stderr + proc.stdout, image_path.parent)
    # the image holds production's files and keys: root only (qemu runs as root)
    os.chmod(partial, 0o600)
    os.replace(partial, image_path)
    return size


_PROGRESS_RE = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")


def convert_qcow2(raw: Path, qcow2: Path, emitter: Emitter | None = None,
                  total_bytes: int | None = None) -> None:
    """``qemu-img convert -O qcow2 raw qcow2``, streaming progress to ``emitter``."""
    qemu_img = _require("qemu-img", "qemu-utils")
    emitter = emitter or NullEmitter()
    raw, qcow2 = Path(raw), Path(qcow2)
    if not raw.is_file():
        raise ImageError(f"raw image {raw} does not exist")
    partial = qcow2.with_name(qcow2.name + ".partial")
    _unlink_quietly(partial, qcow2)
    # created private first: qemu-img keeps the mode of a file that exists (it truncates it)
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    total = total_bytes or raw.stat().st_size
    cmd = [qemu_img, "convert", "-p", "-f", "raw", "-O", "qcow2", str(raw), str(partial)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        buf = b""
        last_pct = -1.0
        while True:
            chunk = proc.stdout.read1(4096)  # type: ignore[attr-defined]
            if not chunk:
                break
            buf = (buf + chunk)[-256:]
            # -p rewrites one line with \r: take the last complete figure
            matches = _PROGRESS_RE.findall(buf.decode(errors="replace"))
            if matches:
                pct = float(matches[-1])
                if pct - last_pct >= 5 or (pct >= 100 > last_pct):
                    last_pct = pct
                    emitter.progress(int(total * pct / 100), total, "bytes", stage="qcow2")
        stderr = proc.stderr.read().decode(errors="replace")
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        _unlink_quietly(partial)
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    if rc != 0:
        _unlink_quietly(partial)
        raise _explain_failure("qemu-img convert", rc, stderr, qcow2.parent)
    os.chmod(partial, 0o600)
    os.replace(partial, qcow2)


def build_disk(staging: Path, out_qcow2: Path, emitter: Emitter | None = None, *,
               headroom: int = DEFAULT_HEADROOM, label: str = "clone-root") -> DiskImage:
    """staging dir -> ext4 raw (temporary, next to the output) -> qcow2."""
    emitter = emitter or NullEmitter()
    staging, out_qcow2 = Path(staging), Path(out_qcow2)
    raw = out_qcow2.with_name(out_qcow2.name + ".raw")
    emitter.phase("image")
    tree = estimate_tree_size(staging)
    size = image_size_for(tree, headroom)
    emitter.log(f"staging {staging}: {tree.files} inodes, {tree.bytes / MiB:.1f} MiB on disk; "
                f"ext4 image size {size // MiB} MiB (headroom {headroom // MiB} MiB)", "info")
    # raw (sparse, ~tree) + qcow2 (~tree) exist at the same time
    free = shutil.disk_usage(out_qcow2.parent if out_qcow2.parent.exists() else Path("/")).free
    if 2 * tree.bytes + 128 * MiB > free:
        raise DiskFullError(f"building the image needs ~{(2 * tree.bytes + 128 * MiB) // MiB} MiB in "
                            f"{out_qcow2.parent}, only {free // MiB} MiB free")
    try:
        emitter.phase("image.mkfs")
        emitter.progress(0, tree.bytes, "bytes", stage="mkfs")
        t0 = time.monotonic()
        build_ext4(staging, raw, headroom=headroom, label=label, size=size, tree=tree)
        mkfs_s = time.monotonic() - t0
        emitter.progress(tree.bytes, tree.bytes, "bytes", stage="mkfs")
        emitter.log(f"mke2fs -d: {mkfs_s:.2f}s", "info")

        emitter.phase("image.qcow2")
        t1 = time.monotonic()
        convert_qcow2(raw, out_qcow2, emitter, total_bytes=size)
        conv_s = time.monotonic() - t1
    except BaseException:
        _unlink_quietly(raw, out_qcow2, out_qcow2.with_name(out_qcow2.name + ".partial"))
        raise
    finally:
        _unlink_quietly(raw)
    qbytes = out_qcow2.stat().st_size
    emitter.log(f"qemu-img convert: {conv_s:.2f}s; {out_qcow2} is {qbytes / MiB:.1f} MiB "
                f"(virtual {size // MiB} MiB)", "info")
    result = DiskImage(path=out_qcow2, virtual_size=size, qcow2_bytes=qbytes, tree=tree,
                       mkfs_seconds=mkfs_s, convert_seconds=conv_s)
    emitter.data("disk_image", {"path": str(out_qcow2), "virtual_size": size, "qcow2_bytes": qbytes,
                                "files": tree.files, "mkfs_seconds": round(mkfs_s, 3),
                                "convert_seconds": round(conv_s, 3)})
    return result


# The tree holds production's setuid binaries and device nodes: on the hypervisor they are
# data, never something to run or open (nosuid, nodev). noatime: reading does not write.
MOUNT_OPTIONS = "loop,nosuid,nodev,noatime"


def loop_mount_unavailable() -> str | None:
    """Why a loop-mounted image cannot be used on this machine; None when it can."""
    if os.geteuid() != 0:
        return "not running as root (a mount needs CAP_SYS_ADMIN)"
    if not Path("/dev/loop-control").exists():
        return "no loop device support (/dev/loop-control is missing: modprobe loop)"
    for tool, package in (("mount", "mount"), ("umount", "mount"), ("losetup", "mount"), ("mke2fs", "e2fsprogs")):
        try:
            _require(tool, package)
        except ToolMissingError as exc:
            return str(exc)
    return None


class MountedImage:
    """A sparse raw ext4 image loop-mounted at a private directory, for the time the clone's
    tree is written into it. ``discard`` (any failure) unmounts, detaches the loop device and
    removes the image; ``unmount`` (success) keeps the image."""

    def __init__(self, raw: Path, mountpoint: Path, size: int) -> None:
        self.raw, self.mountpoint, self.size = Path(raw), Path(mountpoint), size
        self.mounted = False

    @classmethod
    def create(cls, raw: Path, mountpoint: Path, *, size: int, files: int, label: str = "clone-root") -> "MountedImage":
        """``raw`` must not exist; ``mountpoint`` is an empty directory of ours."""
        if len(label) > 16:
            raise ImageError(f"ext4 label {label!r} is longer than 16 characters")
        size = max(-(-size // MiB) * MiB, MIN_IMAGE_SIZE)
        mke2fs, mount = _require("mke2fs", "e2fsprogs"), _require("mount", "mount")
        # private before production's files are written into it; sparse: only written blocks count
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        img = cls(raw, mountpoint, size)
        try:
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
            inodes = max(size // 16384, int(files * 1.5) + 4096)
            proc = subprocess.run(mke2fs_argv(mke2fs, img.raw, size, inodes, label), capture_output=True, text=True,
                                  env={**os.environ, "LC_ALL": "C"})
            if proc.returncode != 0:
                raise _explain_failure("mke2fs", proc.returncode, proc.stderr + proc.stdout, img.raw.parent)
            proc = subprocess.run([mount, "-t", "ext4", "-o", MOUNT_OPTIONS, str(img.raw), str(img.mountpoint)],
                                  capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
            if proc.returncode != 0:
                raise ImageError(f"mount -o {MOUNT_OPTIONS} {img.raw} {img.mountpoint} failed: "
                                 f"{(proc.stderr + proc.stdout).strip()[-400:]}")
            img.mounted = True
            os.chmod(img.mountpoint, 0o700)   # the fresh file system's root is 0755 until tar sets production's
        except BaseException:
            img.discard()
            raise
        return img

    def loop_devices(self) -> list[str]:
        proc = subprocess.run([_require("losetup", "mount"), "-j", str(self.raw)], capture_output=True, text=True)
        return [line.split(":", 1)[0] for line in proc.stdout.splitlines() if line.startswith("/dev/")]

    def unmount(self) -> None:
        """Unmount (flushing the file system); the image stays. Raises ImageError on failure."""
        if not self.mounted:
            return
        proc = subprocess.run([_require("umount", "mount"), str(self.mountpoint)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ImageError(f"umount {self.mountpoint} failed: {(proc.stderr + proc.stdout).strip()[-400:]}")
        self.mounted = False
        for dev in self.loop_devices():   # mount -o loop sets autoclear; an old util-linux may not
            subprocess.run([_require("losetup", "mount"), "-d", dev], capture_output=True)

    def discard(self) -> list[str]:
        """Unmount, detach, remove the image; never raises. Returns what could not be cleaned up."""
        problems: list[str] = []
        if self.mounted:
            try:
                self.unmount()
            except (ImageError, OSError) as exc:
                # busy (a process still inside): detach it from the tree now, the kernel finishes later
                lazy = subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True, text=True)
                if lazy.returncode == 0:
                    self.mounted = False
                else:
                    problems.append(f"{exc}; umount -l: {lazy.stderr.strip()}")
        if not self.mounted:
            try:
                for dev in self.loop_devices():
                    subprocess.run(["losetup", "-d", dev], capture_output=True)
            except (ImageError, OSError) as exc:
                problems.append(f"losetup: {exc}")
            _unlink_quietly(self.raw)
        return problems


def _unescape_mount_path(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash in a path as octal escapes
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def release_mounts_under(directory: Path) -> list[str]:
    """Unmount every file system mounted at or under ``directory`` (deepest first; lazily when busy) and detach
    the loop devices of the images in it: what a worker that died while a clone's image was mounted left behind.
    Returns what it released; raises ImageError when a mount stays."""
    directory = Path(os.path.realpath(directory))
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(_unescape_mount_path(line.split()[4]))
        if point == directory or directory in point.parents:
            mounts.append(point)
    released = []
    umount = _require("umount", "mount") if mounts else "umount"
    for point in sorted(mounts, key=lambda p: len(p.parts), reverse=True):
        proc = subprocess.run([umount, str(point)], capture_output=True, text=True)
        if proc.returncode != 0:
            proc = subprocess.run([umount, "-l", str(point)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ImageError(f"umount {point} failed: {(proc.stderr + proc.stdout).strip()[-400:]}")
        released.append(f"mount {point}")
    if shutil.which("losetup"):
        listing = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            name, _, backing = line.strip().partition(" ")
            backing = Path(backing.strip().removesuffix(" (deleted)"))
            if directory in backing.parents:
                subprocess.run(["losetup", "-d", name], capture_output=True)
                released.append(f"loop device {name}")
    return released


def resolve_in_root(root: Path, rel: str) -> Path:
    """Resolve ``rel`` inside ``root`` as if ``root`` were ``/``: absolute
    symlinks (Debian's /vmlinuz -> boot/vmlinuz-..., /lib -> usr/lib) point
    into the tree, never out to the host (see ``confined``)."""
    try:
        with Root(root) as tree:
            return Path(root).joinpath(tree.resolve(rel))
    except ConfinementError as exc:
        raise ImageError(f"resolving {rel} in {root}: {exc}") from exc


@dataclass(frozen=True)
class BootFiles:
    kernel: Path
    initrd: Path | None


def find_boot_files(root: Path) -> BootFiles:
    """Locate the kernel and initrd of a (staged) root file system for direct
    kernel boot: /boot/vmlinuz + /boot/initrd.img, Debian's /vmlinuz +
    /initrd.img symlinks, or the newest /boot/vmlinuz-<ver> with its initrd.

    The paths returned are inside ``root`` with every symlink resolved in the tree;
    production wrote the tree, so they are looked up through ``confined.Root`` only."""
    root = Path(root)
    try:
        with Root(root) as tree:
            def regular(rel: str) -> str | None:
                target = tree.resolve(rel)
                return target if target and tree.is_file(target) else None

            for k, i in (("boot/vmlinuz", "boot/initrd.img"), ("vmlinuz", "initrd.img")):
                kernel = regular(k)
                if kernel:
                    initrd = regular(i)
                    return BootFiles(root / kernel, root / initrd if initrd else None)
            boot = tree.resolve("boot")
            kernels = []
            for name in tree.listdir(boot) if tree.is_dir(boot) else []:
                target = regular(f"{boot}/{name}") if name.startswith("vmlinuz-") else None
                if target:
                    kernels.append((tree.lstat(target).st_mtime, name, target))
            for _, name, kernel in sorted(kernels, reverse=True):
                initrd = regular(f"{boot}/initrd.img-{name[len('vmlinuz-'):]}")
                return BootFiles(root / kernel, root / initrd if initrd else None)
    except (ConfinementError, NotADirectoryError) as exc:
        raise ImageError(f"looking for a kernel in {root}/boot: {exc}") from exc
    raise ImageError(f"no kernel found in {root}/boot (looked for vmlinuz, vmlinuz-*): "
                     "the clone cannot be booted directly")


__all__ = ["ImageError", "ToolMissingError", "DiskFullError", "TreeSize", "DiskImage", "BootFiles",
           "estimate_tree_size", "image_size_for", "build_ext4", "convert_qcow2", "build_disk",
           "resolve_in_root", "find_boot_files", "MountedImage", "loop_mount_unavailable", "MOUNT_OPTIONS",
           "mke2fs_argv", "DEFAULT_HEADROOM", "MIN_IMAGE_SIZE"]
