"""File access confined to a directory tree: the clone's staging tree, which production wrote.

Production controls every name in the staged tree, so a path like ``etc/network/interfaces``
may be a symlink to ``/etc/shadow`` of the hypervisor, or ``etc`` itself a link to ``/``. The
worker runs as root: following such a name would read or overwrite the hypervisor's own files.

``Root`` opens the tree once (a directory fd) and walks every path from it, one component at
a time, each opened with ``O_NOFOLLOW`` relative to its parent's fd. A symlink met on the way
is resolved as the clone's kernel would resolve it with the tree as ``/``: an absolute target
restarts from the root fd, ``..`` stops at the root. No path string is ever handed to the
kernel whole, so no name can lead out of the tree.

Rules:

* **reads** follow symlinks inside the tree; the file opened must be a regular file with a
  single link: a file with several hard links may share its inode with a file outside the
  tree, and its content must not be copied into the clone or a log (``ConfinementError``);
* **writes** never open the existing file: a new file is created beside it (``O_EXCL |
  O_NOFOLLOW``) and renamed over the name, so a symlink at that name is replaced, not
  followed, and a hard-linked inode keeps its content (only this name changes);
* unlink, rename and symlink act on the name in its (confined) parent directory, never on
  what the name points to.

Plain Python: no Django.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Self

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted at a config name must not hang the fix-up
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
MAX_SYMLINKS = 40        # as the kernel's own limit on symlinks in one lookup
COPY_CHUNK = 1 << 20


class ConfinementError(OSError):
    """A path inside the tree cannot be used safely (hard-linked file, symlink loop...)."""


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _lexical(parts: list[str]) -> list[str]:
    out: list[str] = []
    for p in parts:
        if p == "..":
            if out:
                out.pop()
        else:
            out.append(p)
    return out


class Root:
    """A directory tree opened as a root: every path given is relative to it (a leading '/' is
    the tree's own root) and never resolves outside it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, _DIR_FLAGS)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the walk
    def _walk(self, path: str, *, follow_last: bool, create: bool = False, mode: int = 0o755,
              lexical_missing: bool = False) -> tuple[int, list[str], str | None]:
        """(fd of the parent directory, its components from the root, the last name or None for
        the root itself). The caller closes the fd. ``lexical_missing``: a missing directory
        ends the walk and the rest is taken as names (for ``resolve``)."""
        parts = _split(path)
        stack = [os.dup(self.fd)]
        names: list[str] = []
        hops = 0
        try:
            while parts:
                part = parts.pop(0)
                if part == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                        names.pop()
                    continue
                last = not parts
                cur = stack[-1]
                try:
                    st = os.stat(part, dir_fd=cur, follow_symlinks=False)
                except FileNotFoundError:
                    if last:
                        return self._keep_last(stack), names, part
                    if not create and not lexical_missing:
                        raise
                    st = None
                    if create:
                        os.mkdir(part, mode, dir_fd=cur)
                        st = os.stat(part, dir_fd=cur, follow_symlinks=False)
                if lexical_missing and not last and (st is None or stat.S_ISREG(st.st_mode)):
                    # nothing to resolve below a missing name or a file: the rest are plain names
                    rest = [part] + parts
                    if ".." not in rest:
                        names += rest[:-1]
                        return self._keep_last(stack), names, rest[-1]
                    # such a name is no symlink: 'name/..' collapses; walk what is left again
                    parts = _lexical(names + rest)
                    for fd in stack[1:]:
                        os.close(fd)
                    del stack[1:]
                    names = []
                    continue
                assert st is not None
                if stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                    hops += 1
                    if hops > MAX_SYMLINKS:
                        raise ConfinementError(errno.ELOOP, f"too many symlinks resolving /{path} in the tree")
                    target = os.readlink(part, dir_fd=cur)
                    if target.startswith("/"):
                        for fd in stack[1:]:
                            os.close(fd)
                        del stack[1:]
                        names = []
                    parts = _split(target) + parts
                    continue
                if last:
                    return self._keep_last(stack), names, part
                stack.append(os.open(part, _DIR_FLAGS, dir_fd=cur))
                names.append(part)
            return self._keep_last(stack), names, None
        except BaseException:
            for fd in stack:
                os.close(fd)
            raise

    @staticmethod
    def _keep_last(stack: list[int]) -> int:
        for fd in stack[:-1]:
            os.close(fd)
        fd = stack[-1]
        stack.clear()
        stack.append(fd)   # the caller's except clause must not close a returned fd twice
        return fd

    def _parent(self, path: str) -> tuple[int, str]:
        fd, _, name = self._walk(path, follow_last=False)
        if name is None:
            os.close(fd)
            raise ConfinementError(errno.EINVAL, f"/{path.strip('/')} names the tree's root, not a file in it")
        return fd, name

    # ------------------------------------------------------------------ queries
    def resolve(self, path: str) -> str:
        """The path inside the tree with every symlink resolved (as the clone would), relative to
        the root ('' for the root). The last component need not exist."""
        fd, names, name = self._walk(path, follow_last=True, lexical_missing=True)
        os.close(fd)
        return "/".join(names + ([name] if name else []))

    def lstat(self, path: str) -> os.stat_result | None:
        """The name itself (a symlink is not followed); None if absent."""
        try:
            fd, name = self._parent(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        finally:
            os.close(fd)

    def stat(self, path: str) -> os.stat_result | None:
        """What the name resolves to inside the tree; None if absent (or a symlink leading nowhere)."""
        try:
            target = self.resolve(path)
            return self.lstat(target) if target else os.fstat(self.fd)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def is_file(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISREG(st.st_mode)

    def is_dir(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def is_symlink(self, path: str) -> bool:
        st = self.lstat(path)
        return st is not None and stat.S_ISLNK(st.st_mode)

    def open_dir(self, path: str) -> int:
        """An fd of the directory the path resolves to (the caller closes it)."""
        fd, _, name = self._walk(path, follow_last=True)
        if name is None:
            return fd
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        """Names in the directory (sorted); [] if it does not exist."""
        try:
            fd = self.open_dir(path)
        except (FileNotFoundError, NotADirectoryError):
            return []
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ reads
    def open_file(self, path: str) -> int:
        """A read-only fd of the regular file the path resolves to, with one link only."""
        fd, _, name = self._walk(path, follow_last=True)
        try:
            if name is None:
                raise IsADirectoryError(errno.EISDIR, f"/{path.strip('/')} is the tree's root")
            ffd = os.open(name, _READ_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        try:
            st = os.fstat(ffd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfinementError(errno.EINVAL, f"/{path.strip('/')} in the tree is not a regular file")
            if st.st_nlink > 1:
                raise ConfinementError(
                    errno.EMLINK, f"refusing to read /{path.strip('/')} in the tree: it has {st.st_nlink} hard "
                    f"links, and the other names may be outside the tree")
            os.set_blocking(ffd, True)
            return ffd
        except BaseException:
            os.close(ffd)
            raise

    def read_bytes(self, path: str) -> bytes | None:
        """Content of a regular file; None if the path leads to nothing or to no regular file."""
        if not self.is_file(path):
            return None
        ffd = self.open_file(path)
        try:
            chunks = []
            while chunk := os.read(ffd, COPY_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(ffd)

    def read_text(self, path: str, default: str | None = None) -> str | None:
        data = self.read_bytes(path)
        return default if data is None else data.decode("utf-8", errors="replace")

    def copy_out(self, path: str, dst: str | os.PathLike, mode: int = 0o600) -> None:
        """Copy a file of the tree to ``dst`` outside it (a new file, mode ``mode``), keeping holes."""
        src = self.open_file(path)
        try:
            out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            try:
                os.fchmod(out, mode)
                _copy_sparse_fd(src, out)
            finally:
                os.close(out)
        finally:
            os.close(src)

    # ------------------------------------------------------------------ writes
    def mkdirs(self, path: str, mode: int = 0o755) -> None:
        fd, _, name = self._walk(path, follow_last=True, create=True, mode=mode)
        try:
            if name is not None:
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if not stat.S_ISDIR(st.st_mode):
                        raise NotADirectoryError(errno.ENOTDIR, f"/{path.strip('/')} in the tree is not a directory")
        finally:
            os.close(fd)

    def set_dir_owner_mode(self, path: str, uid: int | None = None, gid: int | None = None,
                           mode: int | None = None) -> None:
        fd = self.open_dir(path)
        try:
            if uid is not None or gid is not None:
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
            if mode is not None:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def write_bytes(self, path: str, data: bytes, *, mode: int | None = None, uid: int | None = None,
                    gid: int | None = None) -> None:
        """Replace the name ``path`` with a new file holding ``data`` (written beside it, then renamed).
        Mode and owner default to the regular file it replaces (else 0644, the writer's owner)."""
        fd, name = self._parent(path)
        tmp = f".{name[:100]}.understudy-{secrets.token_hex(6)}"
        created = False
        try:
            try:
                old = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                old = None
            if old is not None and stat.S_ISDIR(old.st_mode):
                raise IsADirectoryError(errno.EISDIR, f"/{path.strip('/')} in the tree is a directory")
            regular = old is not None and stat.S_ISREG(old.st_mode)
            if mode is None:
                mode = stat.S_IMODE(old.st_mode) if regular else 0o644
            if regular:
                uid = old.st_uid if uid is None else uid
                gid = old.st_gid if gid is None else gid
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=fd)
            created = True
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view):]
                if uid is not None or gid is not None:
                    os.fchown(out, -1 if uid is None else uid, -1 if gid is None else gid)
                os.fchmod(out, mode)
                os.fsync(out)
            finally:
                os.close(out)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            created = False
        finally:
            if created:
                try:
                    os.unlink(tmp, dir_fd=fd)
                except OSError:
                    pass
            os.close(fd)

    def write_text(self, path: str, text: str, **kw: int | None) -> None:
        self.write_bytes(path, text.encode(), **kw)

    def unlink(self, path: str, missing_ok: bool = True) -> None:
        """Remove the name (a symlink itself, never its target)."""
        try:
            fd, name = self._parent(path)
        except (FileNotFoundError, NotADirectoryError):
            if missing_ok:
                return
            raise
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            if not missing_ok:
                raise
        finally:
            os.close(fd)

    def rename(self, path: str, new_name: str) -> None:
        """Rename the entry at ``path`` to ``new_name`` in the same directory."""
        if "/" in new_name or new_name in ("", ".", ".."):
            raise ValueError(f"{new_name!r} is not a plain file name")
        fd, name = self._parent(path)
        try:
            os.rename(name, new_name, src_dir_fd=fd, dst_dir_fd=fd)
        finally:
            os.close(fd)

    def symlink(self, target: str, path: str) -> None:
        """Create the symlink ``path -> target`` (the target is only read inside the clone)."""
        fd, name = self._parent(path)
        try:
            os.symlink(target, name, dir_fd=fd)
        finally:
            os.close(fd)


def _copy_sparse_fd(src: int, dst: int) -> None:
    size = os.fstat(src).st_size
    os.ftruncate(dst, size)
    pos = 0
    while pos < size:
        try:
            data_at = os.lseek(src, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:     # only a hole is left
                return
            data_at = pos                    # no SEEK_DATA here: copy everything
        try:
            hole_at = os.lseek(src, data_at, os.SEEK_HOLE)
        except OSError:
            hole_at = size
        while data_at < hole_at:
            chunk = os.pread(src, min(COPY_CHUNK, hole_at - data_at), data_at)
            if not chunk:
                return
            os.pwrite(dst, chunk, data_at)
            data_at += len(chunk)
        pos = hole_at




def _remove_entry(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd`` whatever it is, never following a link."""
    st = os.lstat(name, dir_fd=dir_fd)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        for child in os.listdir(fd):
            _remove_entry(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def merge_tree(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Move everything under ``src`` into ``dst`` at the same relative paths, replacing what is
    there, and return how many entries moved. Every step is relative to a directory fd opened
    with O_NOFOLLOW: where ``dst`` holds a symlink (or a file) at a name ``src`` has as a
    directory, the name is replaced, never followed — so a later pass of a copy can update the
    tree but cannot write through a link the first pass left in it. ``src`` ends empty."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    src_fd, dst_fd = os.open(src, flags), os.open(dst, flags)
    try:
        return _merge_fd(src_fd, dst_fd)
    finally:
        os.close(src_fd)
        os.close(dst_fd)


def _merge_fd(src_fd: int, dst_fd: int) -> int:
    moved = 0
    for name in os.listdir(src_fd):
        st = os.lstat(name, dir_fd=src_fd)
        try:
            there = os.lstat(name, dir_fd=dst_fd)
        except FileNotFoundError:
            there = None
        if stat.S_ISDIR(st.st_mode) and there is not None and stat.S_ISDIR(there.st_mode):
            # both real directories: merge inside, then take the newer directory's metadata
            sfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src_fd)
            dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dst_fd)
            try:
                moved += _merge_fd(sfd, dfd)
                os.chown(dfd, st.st_uid, st.st_gid)
                os.chmod(dfd, stat.S_IMODE(st.st_mode))
                os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(sfd)
                os.close(dfd)
            os.rmdir(name, dir_fd=src_fd)
            continue
        if there is not None and (stat.S_ISDIR(there.st_mode) or stat.S_ISDIR(st.st_mode)):
            _remove_entry(dst_fd, name)   # a rename cannot replace across file/directory kinds
        os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        moved += 1
    return moved


def identical_entries(src: str | os.PathLike, dst: str | os.PathLike) -> set[str]:
    """The non-directory entries under ``src`` (as '/a/b') whose entry at the same path under
    ``dst`` is the same: same kind, mode, owner and mtime, and the same bytes (a file), target
    (a symlink) or device number. Both trees are walked with O_NOFOLLOW directory fds, so a link
    in ``dst`` is compared as a link, never followed.

    Why: a copy's second pass takes everything newer than a moment on the source's clock, and a
    clock that reads whole seconds (busybox ``date``) lets it take files that were already
    complete before the copy began. Those are not changes *during* the copy."""
    src_fd, dst_fd = os.open(src, _DIR_FLAGS), os.open(dst, _DIR_FLAGS)
    try:
        same: set[str] = set()
        _identical_fd(src_fd, dst_fd, "", same)
        return same
    finally:
        os.close(src_fd)
        os.close(dst_fd)


def _identical_fd(src_fd: int, dst_fd: int, prefix: str, same: set[str]) -> None:
    for name in os.listdir(src_fd):
        st = os.lstat(name, dir_fd=src_fd)
        try:
            there = os.lstat(name, dir_fd=dst_fd)
        except FileNotFoundError:
            continue
        path = f"{prefix}/{os.fsdecode(name)}"
        if stat.S_ISDIR(st.st_mode):
            if stat.S_ISDIR(there.st_mode):
                sfd = os.open(name, _DIR_FLAGS, dir_fd=src_fd)
                try:
                    dfd = os.open(name, _DIR_FLAGS, dir_fd=dst_fd)
                    try:
                        _identical_fd(sfd, dfd, path, same)
                    finally:
                        os.close(dfd)
                finally:
                    os.close(sfd)
            continue
        if (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns) != \
                (there.st_mode, there.st_uid, there.st_gid, there.st_mtime_ns):
            continue
        if stat.S_ISREG(st.st_mode):
            if st.st_size == there.st_size and _same_bytes(src_fd, dst_fd, name):
                same.add(path)
        elif stat.S_ISLNK(st.st_mode):
            if os.readlink(name, dir_fd=src_fd) == os.readlink(name, dir_fd=dst_fd):
                same.add(path)
        elif st.st_rdev == there.st_rdev:
            same.add(path)


def _same_bytes(src_fd: int, dst_fd: int, name: str) -> bool:
    a = os.open(name, _READ_FLAGS, dir_fd=src_fd)
    try:
        b = os.open(name, _READ_FLAGS, dir_fd=dst_fd)
        try:
            while True:
                x, y = os.read(a, COPY_CHUNK), os.read(b, COPY_CHUNK)
                if x != y:
                    return False
                if not x:
                    return True
        finally:
            os.close(b)
    finally:
        os.close(a)


__all__ = ["MAX_SYMLINKS", "ConfinementError", "Root", "identical_entries", "merge_tree"]
