"""Make a test-host root filesystem bootable as a VM (direct kernel boot).

``install_boot(rootfs)`` puts a Debian kernel and a tiny initramfs into
``rootfs/boot`` (``vmlinuz-<ver>``, ``initrd.img-<ver>``, ``config-<ver>``, the
uncompressed PVH-bootable ``vmlinux-<ver>`` and the stable ``vmlinuz`` /
``initrd.img`` symlinks; ``vmlinuz`` points at ``vmlinux-<ver>`` because qemu
boots that ~7 s faster under TCG) plus the few modules it uses into
``rootfs/lib/modules/<ver>``. ``workers.engines.image.find_boot_files`` finds
them in a staged copy.

Why our own initramfs: Debian builds virtio_pci, virtio_blk, virtio_net and ext4
as modules, and the test host has no initramfs-tools. A busybox-static
``/init`` that insmods exactly those (dependencies from modules.dep), mounts
``root=`` and ``switch_root``s to ``/sbin/init`` is ~2 MB and boots in seconds
under TCG.

The kernel comes from ``apt-get download`` (no installation on the worker);
kernel, module subset and initramfs are cached under ``$UNDERSTUDY_CACHE``
(default ``~/.cache/understudy``) so later calls only copy files.
Set ``UNDERSTUDY_KERNEL_DEB=/path/linux-image-...deb`` to use a local package
(offline CI).
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import logging
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

# resolves the tree's own symlinks (lib -> usr/lib, absolute ones too) inside the tree
from workers.engines.image import resolve_in_root

log = logging.getLogger(__name__)

FORMAT_VERSION = "2"
KERNEL_SERIES = "6.1.0"
# crc32c_generic: ext4/jbd2 checksums ask the crypto API for "crc32c" at mount
# time; nothing would modprobe it for us inside the initramfs.
INITRAMFS_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4")
BUSYBOX_CANDIDATES = ("/usr/bin/busybox", "/bin/busybox")
APPLETS = ("sh", "mount", "umount", "insmod", "switch_root", "mkdir", "cat", "sleep", "poweroff",
           "echo", "findfs", "ls", "test", "[")

INIT_SCRIPT = r"""#!/bin/sh
# understudy initramfs: load virtio + ext4 modules, mount root=, switch_root.
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
say() { echo "understudy-initramfs: $*"; }
fail() {
  say "FATAL: $*"
  # Power off so the hypervisor sees the domain stop instead of a hung guest.
  sleep 1
  poweroff -f
}
root=/dev/vda; fstype=ext4; flags=; mode=rw; init=/sbin/init
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=*) root="${arg#root=}" ;;
    rootfstype=*) fstype="${arg#rootfstype=}" ;;
    rootflags=*) flags=",${arg#rootflags=}" ;;
    ro) mode=ro ;;
    rw) mode=rw ;;
    init=*) init="${arg#init=}" ;;
  esac
done
for m in $(cat /etc/initramfs-modules); do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done
case "$root" in
  UUID=*|LABEL=*) dev=""
    i=0; while [ -z "$dev" ] && [ $i -lt 50 ]; do dev=$(findfs "$root" 2>/dev/null); [ -n "$dev" ] || sleep 0.2; i=$((i+1)); done
    [ -n "$dev" ] || fail "root device $root not found"
    root="$dev" ;;
  *) i=0; while [ ! -b "$root" ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
    [ -b "$root" ] || fail "root device $root did not appear" ;;
esac
mkdir -p /newroot
mount -t "$fstype" -o "$mode$flags" "$root" /newroot || fail "cannot mount $root ($fstype, $mode$flags)"
[ -e "/newroot$init" ] || [ -L "/newroot$init" ] || fail "$init not found on $root"
say "mounted $root ($fstype, $mode), switching to $init"
if [ -d /newroot/dev ]; then mount --move /dev /newroot/dev; else umount /dev; fi
umount /sys
umount /proc
exec switch_root /newroot "$init"
"""


class BootError(RuntimeError):
    """Something needed to make the tree bootable is missing (message says what)."""


@dataclass(frozen=True)
class BootInstallStats:
    kernel_version: str
    kernel_bytes: int
    initrd_bytes: int
    modules_bytes: int
    cached: bool
    prepare_seconds: float    # download/extract/initramfs, ~0 when cached
    install_seconds: float    # copying into the rootfs


LAST_INSTALL: BootInstallStats | None = None


def cache_root() -> Path:
    env = os.environ.get("UNDERSTUDY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "understudy"


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd,
                              env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError as e:
        raise BootError(f"{what}: '{cmd[0]}' not found") from e
    if proc.returncode != 0:
        raise BootError(f"{what} failed ({' '.join(cmd)}): {(proc.stderr or proc.stdout).strip()[-600:]}")
    return proc.stdout


def _find_static_busybox() -> str:
    for cand in BUSYBOX_CANDIDATES:
        if os.path.exists(cand):
            out = subprocess.run(["ldd", cand], capture_output=True, text=True)
            text = out.stdout + out.stderr
            if "not a dynamic executable" in text or "statically linked" in text:
                return cand
    raise BootError("a static busybox is needed for the initramfs: apt-get install -y busybox-static")


def pick_kernel_package() -> str:
    """``linux-image-6.1.0-NN-amd64``: what Debian's linux-image-amd64 depends
    on, else the highest NN apt knows (never -rt or -cloud flavours)."""
    rx = re.compile(rf"^linux-image-({re.escape(KERNEL_SERIES)}-(\d+)-amd64)$")
    try:
        deps = _run(["apt-cache", "depends", "linux-image-amd64"], "apt-cache depends")
        for line in deps.splitlines():
            m = re.search(r"Depends:\s*(\S+)", line)
            if m and rx.match(m.group(1)):
                return m.group(1)
    except BootError:
        pass
    names = _run(["apt-cache", "pkgnames", "linux-image-"], "apt-cache pkgnames").split()
    found = [(int(m.group(2)), n) for n in names if (m := rx.match(n))]
    if not found:
        raise BootError(f"apt knows no linux-image-{KERNEL_SERIES}-NN-amd64 package; run apt-get update "
                        "or set UNDERSTUDY_KERNEL_DEB to a local .deb")
    return max(found)[1]


SELECTION_MAX_AGE = 24 * 3600


def _selected_kernel_package(cache: Path) -> str:
    """``UNDERSTUDY_KERNEL_PKG``, else pick_kernel_package() remembered for a
    day: asking apt-cache costs ~1 s, which would dominate a cached install."""
    forced = os.environ.get("UNDERSTUDY_KERNEL_PKG")
    if forced:
        return forced
    memo = cache / "kernels" / "selected-package"
    try:
        if time.time() - memo.stat().st_mtime < SELECTION_MAX_AGE:
            name = memo.read_text().strip()
            if name:
                return name
    except FileNotFoundError:
        pass
    name = pick_kernel_package()
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(memo.name + f".{os.getpid()}")
    tmp.write_text(name + "\n")
    os.replace(tmp, memo)
    return name


def _module_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[str]:
    """Relative .ko paths for ``wanted`` and their dependencies, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        deps[mod] = rest.split()
        by_name[_mod_name(mod)] = mod
    order: list[str] = []

    def visit(path: str, stack: tuple[str, ...]) -> None:
        if path in order:
            return
        if path in stack:
            raise BootError(f"module dependency cycle at {path}")
        for dep in deps.get(path, []):
            visit(dep, stack + (path,))
        order.append(path)

    builtin = (modules_dir / "modules.builtin").read_text() if (modules_dir / "modules.builtin").exists() else ""
    builtin_names = {_mod_name(line) for line in builtin.split()}
    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key], ())
        elif key not in builtin_names:
            raise BootError(f"kernel module {name} is neither a module nor built in")
    for p in order:
        if not p.endswith(".ko"):
            raise BootError(f"{p}: compressed modules are not supported by this initramfs")
    return order


def _mod_name(path: str) -> str:
    base = os.path.basename(path)
    return base.split(".ko")[0].replace("-", "_")


def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "w")
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


def _prepare_kernel(cache: Path) -> tuple[Path, bool]:
    """Cached dir with ``vmlinuz``, ``config``, ``version`` and ``modules/`` (the
    subset with its own modules.dep). Returns (dir, was_cached)."""
    local_deb = os.environ.get("UNDERSTUDY_KERNEL_DEB")
    if local_deb:
        deb_path = Path(local_deb)
        if not deb_path.is_file():
            raise BootError(f"UNDERSTUDY_KERNEL_DEB={local_deb} does not exist")
        m = re.match(r"^(linux-image-[^_]+)", deb_path.name)
        pkg = m.group(1) if m else deb_path.stem
    else:
        deb_path = None
        pkg = _selected_kernel_package(cache)
    key = hashlib.sha256(f"{FORMAT_VERSION}:{pkg}:{','.join(INITRAMFS_MODULES)}".encode()).hexdigest()[:12]
    final = cache / "kernels" / f"{pkg}-{key}"
    if (final / "complete").exists():
        return final, True
    with _lock(cache / "kernels" / f"{pkg}-{key}.lock"):
        if (final / "complete").exists():
            return final, True
        for tool, package in (("dpkg-deb", "dpkg"), ("depmod", "kmod")):
            if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}") \
                    and not os.path.exists(f"/sbin/{tool}"):
                raise BootError(f"'{tool}' not found: apt-get install -y {package}")
        tmp = Path(tempfile.mkdtemp(prefix="kernel.building.", dir=cache / "kernels"))
        try:
            if deb_path is None:
                t0 = time.monotonic()
                _run(["apt-get", "download", pkg], f"apt-get download {pkg}", cwd=tmp)
                debs = sorted(tmp.glob(f"{pkg}_*.deb"))
                if not debs:
                    raise BootError(f"apt-get download {pkg} produced no .deb")
                deb_path = debs[0]
                log.info("downloaded %s (%.1f MiB) in %.1fs", deb_path.name,
                         deb_path.stat().st_size / 2**20, time.monotonic() - t0)
            x = tmp / "x"
            _run(["dpkg-deb", "-x", str(deb_path), str(x)], f"dpkg-deb -x {deb_path.name}")
            versions = sorted(p.name for p in (x / "lib" / "modules").iterdir()) \
                if (x / "lib" / "modules").is_dir() else []
            if len(versions) != 1:
                raise BootError(f"{deb_path.name}: expected one lib/modules/<ver>, found {versions}")
            ver = versions[0]
            vmlinuz = x / "boot" / f"vmlinuz-{ver}"
            if not vmlinuz.is_file():
                raise BootError(f"{deb_path.name} has no boot/vmlinuz-{ver}")
            _run(["depmod", "-b", str(x), ver], "depmod (full tree)")
            full = x / "lib" / "modules" / ver
            order = _module_order(full, INITRAMFS_MODULES)
            out = tmp / "out"
            sub = out / "modules"
            for rel in order:
                dst = sub / "lib" / "modules" / ver / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(full / rel, dst)
            for f in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
                if (full / f).exists():
                    shutil.copy2(full / f, sub / "lib" / "modules" / ver / f)
            # modules.dep etc. for the subset, so modprobe works inside the guest
            _run(["depmod", "-b", str(sub), ver], "depmod (subset)")
            shutil.copy2(vmlinuz, out / "vmlinuz")
            # Under TCG, SeaBIOS + decompressing the bzImage takes ~7 s; qemu
            # boots an uncompressed ELF with a PVH note directly (~0.7 s).
            elf = _decompress_bzimage(vmlinuz.read_bytes())
            if elf is not None and _has_pvh_note(elf):
                _write_sparse(out / "vmlinux", elf)
            else:
                log.info("%s: no PVH-bootable vmlinux inside, using the bzImage", vmlinuz.name)
            shutil.copy2(x / "boot" / f"config-{ver}", out / "config")
            (out / "version").write_text(ver + "\n")
            (out / "load-order").write_text("\n".join(order) + "\n")
            (out / "complete").write_text(f"{pkg}\n")
            if final.exists():
                shutil.rmtree(final)
            os.rename(out, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final, False


PVH_NOTE_TYPE = 18  # XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry point


def _decompress_bzimage(data: bytes) -> bytes | None:
    """The ELF vmlinux inside a bzImage (xz or gzip payload), or None."""
    for magic, fmt in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip")):
        start = data.find(magic)
        while start != -1:
            try:
                if fmt == "xz":
                    out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
                else:
                    out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[start:])
            except (lzma.LZMAError, zlib.error):
                out = b""
            if out.startswith(b"\x7fELF"):
                return out
            start = data.find(magic, start + 1)
    return None


def _has_pvh_note(elf: bytes) -> bool:
    """True if the ELF64 has a Xen PHYS32_ENTRY note (qemu can boot it via PVH)."""
    if elf[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        off, end = p_offset, p_offset + p_filesz
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, off)
            name = elf[off + 12:off + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == PVH_NOTE_TYPE:
                return True
            off += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _write_sparse(path: Path, data: bytes, block: int = 4096) -> None:
    """Write with holes for all-zero blocks: half of vmlinux is zeros (.bss
    and alignment); mke2fs -d keeps the holes, so the clone disk stays small."""
    zero = bytes(block)
    with open(path, "wb") as f:
        for off in range(0, len(data), block):
            chunk = data[off:off + block]
            if chunk == zero[:len(chunk)]:
                f.seek(len(chunk), os.SEEK_CUR)
            else:
                f.write(chunk)
        f.truncate(len(data))


def _newc_entry(name: str, mode: int, data: bytes, ino: int, nlink: int = 1) -> bytes:
    name_b = name.encode() + b"\0"
    hdr = b"070701" + b"".join(f"{v:08X}".encode() for v in (
        ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
    out = hdr + name_b
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def _build_initramfs(kdir: Path, out: Path) -> None:
    """gzip'd newc cpio written directly (no root-owned staging dir, no
    dependence on the host cpio's flags); all files owned by root."""
    busybox = _find_static_busybox()
    ver = (kdir / "version").read_text().strip()
    order = (kdir / "load-order").read_text().split()
    entries: list[bytes] = []
    ino = 1

    def add(name: str, mode: int, data: bytes = b"") -> None:
        nonlocal ino
        entries.append(_newc_entry(name, mode, data, ino, 2 if mode & 0o040000 else 1))
        ino += 1

    DIR, REG, LNK = 0o040000, 0o100000, 0o120000
    for d in ("bin", "dev", "proc", "sys", "newroot", "etc", "lib", "lib/modules"):
        add(d, DIR | 0o755)
    # /dev/console must exist before devtmpfs is mounted: the kernel opens it
    # for init's stdio, otherwise early messages from /init are lost.
    entries.append(_char_dev_entry("dev/console", ino, 5, 1))
    ino += 1
    add("bin/busybox", REG | 0o755, Path(busybox).read_bytes())
    for applet in APPLETS:
        add(f"bin/{applet}", LNK | 0o777, b"busybox")
    add("init", REG | 0o755, INIT_SCRIPT.encode())
    dirs_done: set[str] = set()
    for rel in order:
        parts = Path(rel).parts[:-1]
        for i in range(1, len(parts) + 1):
            d = "lib/modules/" + "/".join(parts[:i])
            if d not in dirs_done:
                dirs_done.add(d)
                add(d, DIR | 0o755)
        add(f"lib/modules/{rel}", REG | 0o644,
            (kdir / "modules" / "lib" / "modules" / ver / rel).read_bytes())
    add("etc/initramfs-modules", REG | 0o644, ("\n".join(order) + "\n").encode())
    entries.append(_newc_entry("TRAILER!!!", 0, b"", 0))
    tmp = out.with_name(out.name + ".partial")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
            for e in entries:
                gz.write(e)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _char_dev_entry(name: str, ino: int, major: int, minor: int) -> bytes:
    name_b = name.encode() + b"\0"
    hdr = b"070701" + b"".join(f"{v:08X}".encode() for v in (
        ino, 0o020600, 0, 0, 1, 0, 0, 0, 0, major, minor, len(name_b), 0))
    out = hdr + name_b
    return out + b"\0" * (-len(out) % 4)


def _prepare_initramfs(kdir: Path) -> tuple[Path, bool]:
    busybox = _find_static_busybox()
    st = os.stat(busybox)
    key = hashlib.sha256(
        f"{FORMAT_VERSION}:{INIT_SCRIPT}:{APPLETS}:{busybox}:{st.st_size}:{int(st.st_mtime)}".encode()
    ).hexdigest()[:12]
    out = kdir / f"initrd-{key}.img"
    if out.exists():
        return out, True
    with _lock(kdir / "initrd.lock"):
        if not out.exists():
            _build_initramfs(kdir, out)
    return out, False


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def install_boot(rootfs: Path) -> None:
    """Install kernel, initramfs and module subset into ``rootfs`` (see module doc)."""
    global LAST_INSTALL
    rootfs = Path(rootfs)
    if not rootfs.is_dir():
        raise BootError(f"rootfs {rootfs} is not a directory")
    cache = cache_root()
    t0 = time.monotonic()
    kdir, k_cached = _prepare_kernel(cache)
    initrd, i_cached = _prepare_initramfs(kdir)
    prepare_s = time.monotonic() - t0
    ver = (kdir / "version").read_text().strip()

    t1 = time.monotonic()
    boot = resolve_in_root(rootfs, "boot")
    boot.mkdir(parents=True, exist_ok=True)
    os.chmod(boot, 0o755)
    files = [(kdir / "vmlinuz", f"vmlinuz-{ver}"), (initrd, f"initrd.img-{ver}"),
             (kdir / "config", f"config-{ver}")]
    pvh = (kdir / "vmlinux").exists()
    if pvh:
        files.append((kdir / "vmlinux", f"vmlinux-{ver}"))
    for src, name in files:
        # cp --sparse=always keeps vmlinux's holes (shutil.copyfile would fill them)
        _run(["cp", "--sparse=always", str(src), str(boot / name)], f"copy {name}")
        os.chmod(boot / name, 0o644)
    # Debian-style stable names; relative so they resolve both inside the
    # guest and on the worker that reads the staged tree. ``vmlinuz`` points
    # at the PVH-bootable ELF when there is one: direct kernel boot (what the
    # clone engine does with /boot/vmlinuz) is then ~7 s faster under TCG.
    kernel_target = f"vmlinux-{ver}" if pvh else f"vmlinuz-{ver}"
    for link, target in (("vmlinuz", kernel_target), ("initrd.img", f"initrd.img-{ver}")):
        p = boot / link
        if p.is_symlink() or p.exists():
            p.unlink()
        os.symlink(target, p)
    mods_src = kdir / "modules" / "lib" / "modules" / ver
    mods_dst = resolve_in_root(rootfs, f"lib/modules/{ver}")
    if mods_dst.exists():
        shutil.rmtree(mods_dst)
    mods_dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(mods_src, mods_dst, symlinks=True)
    install_s = time.monotonic() - t1

    LAST_INSTALL = BootInstallStats(
        kernel_version=ver,
        kernel_bytes=(boot / kernel_target).stat().st_size,
        initrd_bytes=(boot / f"initrd.img-{ver}").stat().st_size,
        modules_bytes=_dir_bytes(mods_dst),
        cached=k_cached and i_cached,
        prepare_seconds=prepare_s,
        install_seconds=install_s,
    )
    log.info("install_boot %s: kernel %s (%.1f MiB), initrd %.1f MiB, modules %.1f MiB; "
             "prepare %.2fs (%s), copy %.2fs", rootfs, ver, LAST_INSTALL.kernel_bytes / 2**20,
             LAST_INSTALL.initrd_bytes / 2**20, LAST_INSTALL.modules_bytes / 2**20, prepare_s,
             "cached" if LAST_INSTALL.cached else "built", install_s)
