#!/usr/bin/env python3
"""understudy sync agent: the only code that writes to production. Stdlib only.

Shipped over SSH together with ``hashagent.py`` (same digests as the manifests)
by the agent bootstrap (``agent/__init__.py``); nothing is left on the host
except the per-run backup directory and its journal.

Modes (``argv[1]``), each reading one JSON line (the plan) from stdin first:

``read``     (source side, e.g. the clone) then, per file, one request line from the
             worker: ``{"ev": "skip", "i"}`` or ``{"ev": "need", "i", "blocks": {chunk: b64 digests}, "size"}``
             (the target's 8-byte block digests for the planned chunks). Answers with a
             frame on stdout: a JSON header line ``{"i", "size", "mtime_ns", "hash"?,
             "ranges": [[off, len], ...], "n"}`` then exactly ``n`` raw bytes (or
             ``{"i", "error"}`` and no bytes). Only blocks whose digest differs travel.
``apply``    (target side, production) per file: copy the original to a temp file beside
             it while hashing it (must equal the plan's expectation, or equal the source:
             then it is already done — skipped by content), ask for the blocks it lacks
             (``{"ev": "need"}`` on stdout), patch them from the frame on stdin, set
             owner/mode/xattrs/mtime, fsync, verify the hash, hard-link the original into
             ``<backup_dir>/<run_id>/<path>``, re-check the target did not change, rename
             the temp over it, fsync the directory, re-hash the result.
``rollback`` (production) restore every file the journal says was backed up.

Every state change is appended to ``<backup_dir>/<run_id>/journal.jsonl`` (fsync'd)
and printed as ``{"ev": "state", ...}`` for the worker to mirror.

Paths: every path is walked component by component from its root with
O_NOFOLLOW (``openat``), so a symlink anywhere below a root is refused, never
followed; ``..``/empty components are refused; the final file must be regular.
"""
import base64
import errno
import json
import os
import stat
import sys
import time

try:
    import hashagent  # provided by the bootstrap
except ImportError:  # run from the source tree (tests, local use)
    from workers.engines.agent import hashagent  # type: ignore

BLOCK_DIGEST_BYTES = 8   # per-4 KiB-block digests only pick what to send; the whole-file hash verifies
# Memory bounds, whatever the file size: a frame carries at most FRAME_BYTES of file data, a frame
# header line at most HEADER_BYTES, and one request names chunks whose block digests fit in
# REQUEST_DIGEST_BYTES; a file is sent as a series of requests, each answered by a series of frames.
FRAME_BYTES = 1 << 20
HEADER_BYTES = 1 << 20
REQUEST_DIGEST_BYTES = 512 << 10
RDONLY_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
RDONLY_FILE = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)

STDIN = sys.stdin.buffer
STDOUT = sys.stdout.buffer


class FileFailure(Exception):
    """One file cannot be synced; ``kind`` classifies it for the worker."""

    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind


class ProtocolError(FileFailure):
    """The peer broke the frame protocol: the stream cannot be trusted any more, the run stops."""

    def __init__(self, message):
        FileFailure.__init__(self, "protocol", message)


class StreamEnded(Exception):
    """The worker's stream ended mid-file (connection dropped / worker killed)."""


def b64(raw):
    return base64.b64encode(raw).decode("ascii")


def unb64(text):
    return base64.b64decode(text)


def show(raw):
    return raw.decode("utf-8", "backslashreplace")


def emit(obj):
    STDOUT.write((json.dumps(obj, separators=(",", ":")) + "\n").encode("ascii"))
    STDOUT.flush()


def read_line(limit=-1):
    """One JSON line from stdin; ``limit``: refuse a longer line (ProtocolError) without reading on."""
    line = STDIN.readline(limit)
    if not line.endswith(b"\n"):
        if limit > 0 and len(line) >= limit:
            raise ProtocolError("protocol error: a frame header longer than %d bytes" % limit)
        raise StreamEnded("input ended")
    try:
        return json.loads(line.decode("utf-8"))
    except ValueError:
        raise ProtocolError("protocol error: a frame header that is not JSON: %r" % line[:80])


def read_exact(n):
    data = STDIN.read(n)
    if data is None or len(data) != n:
        raise StreamEnded("input ended after %d of %d bytes" % (len(data or b""), n))
    return data


# ---------------------------------------------------------------- errors
def classify(exc, what, path):
    """An OSError as a FileFailure with a message a person can act on."""
    code = getattr(exc, "errno", None)
    reason = exc.strerror or str(exc)
    where = "%s (%s)" % (show(path), what)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return FileFailure("disk_full", "disk full on production: %s: %s" % (where, reason))
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FileFailure("permission_denied", "permission denied on production: %s: %s" % (where, reason))
    if code in (errno.ELOOP, errno.ENOTDIR):
        return FileFailure("unsafe_path", "refusing %s: a path component is a symlink or not a directory"
                           % where)
    return FileFailure("io_error", "%s: %s" % (where, reason))


# ---------------------------------------------------------------- safe paths
def check_rel(rel):
    if not rel or rel.startswith(b"/") or b"\0" in rel:
        raise FileFailure("unsafe_path", "unsafe relative path %r" % show(rel))
    for part in rel.split(b"/"):
        if part in (b"", b".", b".."):
            raise FileFailure("unsafe_path", "path %r has an empty, '.' or '..' component" % show(rel))


def open_root(root):
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise classify(exc, "open root", root)


def open_dir_step(fd, part, create):
    """One directory component below ``fd``, never through a symlink (O_NOFOLLOW); made 0700 if
    missing and ``create``."""
    try:
        return os.open(part, RDONLY_DIR, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(part, 0o700, dir_fd=fd)
        except FileExistsError:
            pass
        return os.open(part, RDONLY_DIR, dir_fd=fd)


def open_parent(root_fd, rel, create=False):
    """fd of rel's parent directory (walked with O_NOFOLLOW from root_fd) and the last name."""
    check_rel(rel)
    parts = rel.split(b"/")
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            nfd = open_dir_step(fd, part, create)
            os.close(fd)
            fd = nfd
    except OSError as exc:
        os.close(fd)
        raise classify(exc, "walk to parent directory", rel)
    return fd, parts[-1]


def inside(fd, root):
    """Belt and braces for O_NOFOLLOW: the opened object really lies under root."""
    real = os.path.realpath(root)
    try:
        where = os.readlink("/proc/self/fd/%d" % fd).encode("utf-8", "surrogateescape")
    except OSError:
        return True  # no /proc: the O_NOFOLLOW walk is the guarantee
    return where == real or where.startswith(real.rstrip(b"/") + b"/")


def open_regular(pfd, name, root, path):
    try:
        fd = os.open(name, RDONLY_FILE, dir_fd=pfd)
    except OSError as exc:
        raise classify(exc, "open", path)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileFailure("unsafe_path", "%s is not a regular file" % show(path))
    if not inside(fd, root):
        os.close(fd)
        raise FileFailure("unsafe_path", "%s resolves outside its root %s" % (show(path), show(root)))
    return fd, st


# ---------------------------------------------------------------- hashing (same digests as the manifests)
class Digest(object):
    def __init__(self, algo, mode, chunk):
        self.algo, self.mode, self.chunk = algo, mode, chunk
        self.one, self.stream, _src = hashagent.backends()[algo]

    def new(self):
        return _Running(self)

    def block(self, data):
        return self.one(data)[:BLOCK_DIGEST_BYTES]

    def of_fd(self, fd):
        run = self.new()
        off = 0
        while True:
            data = os.pread(fd, self.chunk, off)
            if not data:
                break
            run.update(data)
            off += len(data)
        return run.hexdigest()


class _Running(object):
    """Feeds file data in any piece sizes; produces the manifest's file digest."""

    def __init__(self, d):
        self.d = d
        self.chunks = []
        self.pending = b""
        self.total = 0
        self.whole = d.stream() if d.mode == "whole" else None

    def update(self, data):
        self.total += len(data)
        if self.whole is not None:
            self.whole.update(data)
            return
        buf = self.pending + data if self.pending else data
        c = self.d.chunk
        pos = 0
        while len(buf) - pos >= c:
            self.chunks.append(self.d.one(buf[pos:pos + c]))
            pos += c
        self.pending = buf[pos:]

    def hexdigest(self):
        if self.whole is not None:
            return self.whole.digest().hex()
        if self.pending:
            self.chunks.append(self.d.one(self.pending))
            self.pending = b""
        tree = self.d.stream()
        tree.update(hashagent.TREE_MAGIC + self.d.chunk.to_bytes(8, "big") + self.total.to_bytes(8, "big"))
        tree.update(b"".join(self.chunks))
        return tree.digest().hex()


def block_digests(d, fd, chunk_index, block):
    data = os.pread(fd, d.chunk, chunk_index * d.chunk)
    return b"".join(d.block(data[o:o + block]) for o in range(0, len(data), block))


# ---------------------------------------------------------------- journal
# Records recovery depends on are fsync'd before the agent takes the next step: "backed_up" must be
# on disk before the rename (rollback finds replaced files through it), "failed"/run markers for the
# record. The progress records in between ride along with the next fsync: resuming never trusts them
# (every file is re-checked by content), and one fsync per record cost ~40% of a small sync's time.
DURABLE = frozenset(["run_start", "backed_up", "failed", "run_end", "rollback_start", "restored",
                     "rollback_failed", "rollback_end", "done"])


class Journal(object):
    """Append-only JSON lines on production; see DURABLE for which records are fsync'd."""

    def __init__(self, run_fd):
        self.fd = os.open("journal.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600,
                          dir_fd=run_fd)
        os.fsync(run_fd)

    def write(self, rec):
        rec = dict(rec, ts=round(time.time(), 3))
        os.write(self.fd, (json.dumps(rec, separators=(",", ":"), sort_keys=True) + "\n").encode("ascii"))
        if rec.get("state") in DURABLE:
            os.fsync(self.fd)


def state(journal, rec):
    if journal is not None:
        journal.write(rec)
    out = dict(rec)
    out["ev"] = "state"
    emit(out)


def open_backup_dir(backup_dir, create=True):
    """fd of the backup dir, walked from / one component at a time with O_NOFOLLOW (a symlink
    anywhere in its path is refused). Every directory above it must be owned by root or us and not
    writable by others (unless sticky), the backup dir itself owned by us (the ssh user) and 0700:
    otherwise someone else could swap a backup or the journal under us."""
    if not backup_dir.startswith(b"/"):
        raise FileFailure("unsafe_backup_dir", "backup dir %s is not absolute" % show(backup_dir))
    parts = [p for p in backup_dir.split(b"/") if p]
    if not parts or any(p in (b".", b"..") for p in parts):
        raise FileFailure("unsafe_backup_dir", "backup dir %s is not a plain absolute path" % show(backup_dir))
    me = os.geteuid()
    fd = os.open("/", RDONLY_DIR)
    where = b""
    try:
        for n, part in enumerate(parts):
            where += b"/" + part
            nfd = open_dir_step(fd, part, create)
            os.close(fd)
            fd = nfd
            st = os.fstat(fd)
            mode = stat.S_IMODE(st.st_mode)
            if n < len(parts) - 1:
                if st.st_uid not in (0, me) or (mode & 0o022 and not mode & stat.S_ISVTX):
                    raise FileFailure("unsafe_backup_dir", "refusing backup dir %s: %s is owned by uid %d "
                                      "with mode %04o (others could replace what is below it)"
                                      % (show(backup_dir), show(where), st.st_uid, mode))
            elif st.st_uid != me or mode & 0o077:
                raise FileFailure("unsafe_backup_dir", "refusing backup dir %s: owned by uid %d with mode %04o; it "
                                  "must be owned by the ssh user (uid %d) and mode 0700"
                                  % (show(backup_dir), st.st_uid, mode, me))
        return fd
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise FileFailure("unsafe_backup_dir", "refusing backup dir %s: %s is a symlink or not a directory"
                              % (show(backup_dir), show(where)))
        raise classify(exc, "backup dir", backup_dir)
    except FileFailure:
        os.close(fd)
        raise


def open_run_dir(backup_dir, run_id, create=True):
    if "/" in run_id or run_id in ("", ".", ".."):
        raise FileFailure("unsafe_path", "bad run id %r" % run_id)
    bfd = open_backup_dir(backup_dir, create)
    try:
        if create:
            try:
                os.mkdir(run_id, 0o700, dir_fd=bfd)
            except FileExistsError:
                pass
        rfd = os.open(run_id, RDONLY_DIR, dir_fd=bfd)
        st = os.fstat(rfd)
        if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
            os.close(rfd)
            raise FileFailure("unsafe_backup_dir", "refusing run directory %s/%s: owned by uid %d with mode %04o; "
                              "it must be the ssh user's and 0700"
                              % (show(backup_dir), run_id, st.st_uid, stat.S_IMODE(st.st_mode)))
        return rfd
    except OSError as exc:
        raise classify(exc, "backup run directory", backup_dir + b"/" + run_id.encode())
    finally:
        os.close(bfd)


# ---------------------------------------------------------------- one writer at a time
LOCK_NAME = b".understudy-writer.lock"


def take_writer_lock(backup_dir, run_id, what):
    """An exclusive flock on ``<backup_dir>/.understudy-writer.lock``, taken without waiting and held
    until this process ends (the kernel drops it, even on SIGKILL). The holder writes who it is."""
    import fcntl
    bfd = open_backup_dir(backup_dir, create=True)
    try:
        fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600,
                     dir_fd=bfd)
    finally:
        os.close(bfd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        except ValueError:
            holder = {}
        os.close(fd)
        since = holder.get("since")
        raise FileFailure("locked", "another understudy writer holds production's lock since %s (run %s, %s, pid %s); "
                          "refusing to %s beside it"
                          % (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if since else "?",
                             holder.get("run_id", "?"), holder.get("what", "?"), holder.get("pid", "?"), what))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"run_id": run_id, "pid": os.getpid(), "since": round(time.time(), 3),
                              "what": what}).encode("ascii"), 0)
    return fd


# ---------------------------------------------------------------- stopping on request
class Cancelled(StreamEnded):
    """SIGTERM from the worker (the step was cancelled): stop at the next safe point."""


STOP = {"critical": 0, "pending": False}


def on_sigterm(signum, frame):
    # between the backup link and the file's last record the swap must complete: stop after it
    if STOP["critical"]:
        STOP["pending"] = True
        return
    raise Cancelled("stopped by SIGTERM")


def stop_if_pending():
    if STOP["pending"] and not STOP["critical"]:
        raise Cancelled("stopped by SIGTERM")


# ---------------------------------------------------------------- helpers
def write_all(fd, data, off):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, off)
        view = view[n:]
        off += n


def copy_fd(src, dst, digest=None):
    """Copy all of ``src`` into ``dst`` (1 MiB at a time, by offset), feeding ``digest`` if given."""
    off = 0
    while True:
        data = os.pread(src, 1 << 20, off)
        if not data:
            return off
        if digest is not None:
            digest.update(data)
        write_all(dst, data, off)
        off += len(data)


def temp_name(name, run_id):
    return b"." + name[:120] + b".understudy-" + run_id.encode("ascii") + b".tmp"


def remove_leftover(pfd, tname):
    """A temp file from a crashed run (ours by name) is removed before anything else."""
    try:
        st = os.lstat(tname, dir_fd=pfd)
    except FileNotFoundError:
        return False
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise FileFailure("io_error", "leftover temp %s is not a regular file; remove it by hand" % show(tname))
    os.unlink(tname, dir_fd=pfd)
    os.fsync(pfd)
    return True


def copy_xattrs(src, dst):
    if not hasattr(os, "listxattr"):
        return
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for n in names:
        try:
            os.setxattr(dst, n, os.getxattr(src, n))
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise


class Flusher(object):
    """fdatasync in a thread (the syscall releases the GIL). Errors surface in the final fsync."""

    def __init__(self, fd):
        import threading
        self.thread = threading.Thread(target=self.run, args=(fd,))
        self.thread.daemon = True
        self.thread.start()

    def run(self, fd):
        try:
            os.fdatasync(fd)
        except OSError:
            pass  # reported by the fsync that follows the patch

    def join(self):
        self.thread.join()


def same_file(a, b, ctime=True):
    keys = ["st_dev", "st_ino", "st_size", "st_mtime_ns"] + (["st_ctime_ns"] if ctime else [])
    return all(getattr(a, k) == getattr(b, k) for k in keys)


# ---------------------------------------------------------------- apply (production side)
class Applier(object):
    def __init__(self, plan):
        self.plan = plan
        self.run_id = plan["run_id"]
        self.d = Digest(plan["algo"], plan["mode"], plan["chunk"])
        self.block = plan["block"]
        self.roots = [unb64(r) for r in plan["roots"]]
        self.root_fds = {}
        self.journal = None
        self.run_fd = None
        self.backup_dir = unb64(plan["backup_dir"]) if plan.get("backup_dir") else None
        self.continue_on_error = plan.get("on_error") == "continue"

    def root_fd(self, i):
        if i not in self.root_fds:
            self.root_fds[i] = open_root(self.roots[i])
        return self.root_fds[i]

    def run(self):
        if self.backup_dir is not None:
            self.lock_fd = take_writer_lock(self.backup_dir, self.run_id, "sync back")
            self.run_fd = open_run_dir(self.backup_dir, self.run_id)
            self.journal = Journal(self.run_fd)
            self.journal.write({"state": "run_start", "pid": os.getpid(), "fingerprint": self.plan.get("fingerprint"),
                                "roots": self.plan["roots"], "algo": self.plan["algo"], "mode": self.plan["mode"],
                                "chunk": self.plan["chunk"]})
        summary = {"done": 0, "skipped": 0, "failed": 0}
        stopped = False
        for f in self.plan["files"]:
            if stopped:
                emit({"ev": "skip", "i": f["i"]})
                continue
            try:
                stop_if_pending()
                outcome = self.one(f)
                summary[outcome] += 1
                stop_if_pending()
            except Cancelled:
                if self.journal is not None:
                    self.journal.write(dict(summary, state="run_end", stopped=True, cancelled=True))
                raise
            except StreamEnded:
                raise
            except FileFailure as exc:
                summary["failed"] += 1
                state(self.journal, {"i": f["i"], "rel": f["rel"], "state": "failed", "kind": exc.kind,
                                     "message": str(exc)})
                if not self.continue_on_error or exc.kind == "protocol":
                    stopped = True
        if self.journal is not None:
            self.journal.write(dict(summary, state="run_end", stopped=stopped))
        emit(dict(summary, ev="end", stopped=stopped))

    def one(self, f):
        i, rel, root_i = f["i"], unb64(f["rel"]), f["root"]
        root = self.roots[root_i]
        path = root.rstrip(b"/") + b"/" + rel
        base = {"i": i, "rel": f["rel"]}
        asked = [False]

        def skip_source():
            if not asked[0]:
                asked[0] = True
                emit({"ev": "skip", "i": i})

        pfd, name = open_parent(self.root_fd(root_i), rel)
        tname = temp_name(name, self.run_id)
        ofd = tfd = flusher = None
        created_backup = None
        depth = STOP["critical"]
        try:
            if remove_leftover(pfd, tname):
                state(self.journal, dict(base, state="leftover_removed"))
            ofd, st0 = open_regular(pfd, name, root, path)
            state(self.journal, dict(base, state="started", size=st0.st_size))
            # 1. copy the original beside the target, hashing it on the way (one read pass)
            try:
                tfd = os.open(tname, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=pfd)
            except OSError as exc:
                raise classify(exc, "create temp file", path)
            run = self.d.new()
            try:
                copy_fd(ofd, tfd, run)
            except OSError as exc:
                raise classify(exc, "copy to temp file", path)
            have = run.hexdigest()
            # start writing the copy to disk while the blocks travel: the fsync before the swap
            # then only waits for the patched blocks
            flusher = Flusher(tfd)
            st1 = os.fstat(ofd)
            if not same_file(st0, st1):
                raise FileFailure("target_changed", "target changed during sync: %s was written to while it "
                                                    "was being copied" % show(path))
            if f.get("source_hash") and have == f["source_hash"] and st0.st_size == f["source_size"]:
                skip_source()
                self.unlink_quiet(pfd, tname)  # the copy was only a means to hash it
                state(self.journal, dict(base, state="skipped", reason="already equal to the source"))
                return "skipped"
            if f.get("expect_hash") and (have != f["expect_hash"] or st0.st_size != f["expect_size"]):
                raise FileFailure("target_changed", "target changed during sync: %s no longer has the content "
                                                    "the approved plan expected (hash %s, expected %s)"
                                  % (show(path), have[:16], f["expect_hash"][:16]))
            state(self.journal, dict(base, state="copied", hash=have))
            # 2. ask the source for the blocks we lack
            chunks = f["chunks"] if f["chunks"] is not None else \
                list(range((f["source_size"] + self.d.chunk - 1) // self.d.chunk)) if f.get("source_size") \
                is not None else None
            if chunks is None:  # live sync: source size unknown up front -> every chunk we have
                chunks = list(range((st0.st_size + self.d.chunk - 1) // self.d.chunk + 1))
            asked[0] = True
            last = self.receive(i, tfd, st0, f, chunks, path)
            data_bytes = last["n_total"]
            # 3. size, metadata, fsync, verify — all on the temp file (the blocks are patched in)
            try:
                os.ftruncate(tfd, last["size"])
                os.fchown(tfd, st0.st_uid, st0.st_gid)  # chown first: it clears set-id bits
                os.fchmod(tfd, stat.S_IMODE(st0.st_mode))
                copy_xattrs(ofd, tfd)
                mtime = last["mtime_ns"] if self.plan.get("mtime") == "source" else st0.st_mtime_ns
                os.utime(tfd, ns=(st0.st_atime_ns, mtime))
                flusher.join()
                os.fsync(tfd)
            except OSError as exc:
                raise classify(exc, "write temp file", path)
            want = f.get("source_hash") or last.get("hash")
            got = self.d.of_fd(tfd)
            if got != want:
                raise FileFailure("verify_failed", "%s: patched copy hashes to %s, the source to %s — the source "
                                                   "changed or the stream was damaged; nothing swapped"
                                  % (show(path), got[:16], (want or "?")[:16]))
            state(self.journal, dict(base, state="patched", bytes=data_bytes, ranges=last["ranges_total"],
                                     hash=got))
            # 4. the original must still be the one we copied, right before it is backed up and swapped
            try:
                cfd, st2 = open_regular(pfd, name, root, path)
                os.close(cfd)
            except FileFailure:
                raise FileFailure("target_changed", "target changed during sync: %s was replaced or removed"
                                  % show(path))
            if not same_file(st0, st2):
                raise FileFailure("target_changed", "target changed during sync: %s was modified while the new "
                                                    "version was prepared; nothing swapped" % show(path))
            STOP["critical"] += 1   # from here to the file's last record a SIGTERM waits
            if self.run_fd is not None:
                created_backup = self.backup(pfd, name, ofd, st0, have, path)
                st3 = os.fstat(ofd)
                if not same_file(st0, st3, ctime=False):
                    raise FileFailure("target_changed", "target changed during sync: %s (after backup)"
                                      % show(path))
                # durable before the rename: a rollback finds every replaced file through this record
                brel = path.lstrip(b"/")
                state(self.journal, dict(base, state="backed_up", root=self.plan["roots"][root_i],
                                         backup=b64(self.backup_dir.rstrip(b"/") + b"/" + self.run_id.encode()
                                                    + b"/" + brel),
                                         orig_hash=have, orig_size=st0.st_size, new_hash=got))
            # 5. atomic swap, directory fsync, re-hash the result
            try:
                os.rename(tname, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                os.fsync(pfd)
            except OSError as exc:
                raise classify(exc, "rename over target", path)
            if created_backup is not None:  # the backup now holds the only copy of the original: keep it
                os.close(created_backup[0])
                created_backup = None
            state(self.journal, dict(base, state="swapped"))
            nfd, st4 = open_regular(pfd, name, root, path)
            try:
                final = self.d.of_fd(nfd)
            finally:
                os.close(nfd)
            if final != want or st4.st_ino != os.fstat(tfd).st_ino:
                raise FileFailure("verify_failed", "%s: content after the swap hashes to %s, expected %s; the "
                                                   "original is in the backup dir" % (show(path), final[:16],
                                                                                       want[:16]))
            state(self.journal, dict(base, state="done", hash=final, bytes=data_bytes))
            return "done"
        except (FileFailure, StreamEnded, BrokenPipeError) as exc:
            # BrokenPipeError: the worker went away while we were reporting (stdout closed)
            if isinstance(exc, FileFailure):
                skip_source()
            if created_backup is not None:
                self.unlink_quiet(created_backup[0], created_backup[1])
                os.close(created_backup[0])
            if tfd is not None:
                self.unlink_quiet(pfd, tname)
            raise
        finally:
            STOP["critical"] = depth
            if flusher is not None:
                flusher.join()  # never close an fd another thread is syncing
            for fd in (ofd, tfd):
                if fd is not None:
                    os.close(fd)
            os.close(pfd)

    def receive(self, i, tfd, st0, f, chunks, path):
        """Ask for the blocks of ``chunks`` the temp file lacks, in requests whose digests stay under
        REQUEST_DIGEST_BYTES, and patch each frame in as it comes (at most FRAME_BYTES held).
        Returns the last frame's header with the totals; a frame outside what was asked for, or
        larger than FRAME_BYTES, is a ProtocolError before any of its bytes are read."""
        per_chunk = max(1, (self.d.chunk // self.block) * BLOCK_DIGEST_BYTES)
        batch = max(1, REQUEST_DIGEST_BYTES // per_chunk)
        live = f.get("source_hash") is None   # the source sends every chunk it has, size unknown here
        totals = {"n_total": 0, "ranges_total": 0}
        last = None
        for start in range(0, max(1, len(chunks)), batch):
            part = chunks[start:start + batch]
            final = start + batch >= len(chunks)
            blocks = {}
            for c in part:
                if c * self.d.chunk < st0.st_size:
                    blocks[str(c)] = b64(block_digests(self.d, tfd, c, self.block))
            emit({"ev": "need", "i": i, "size": st0.st_size, "chunks": part, "blocks": blocks, "final": final})
            allowed = None if live else set(part)
            failure = None   # a write that failed: the request's remaining frames are still read
            while True:
                head = read_line(HEADER_BYTES)
                if head.get("i") != i:
                    raise ProtocolError("protocol error: stream out of order: got file %r, expected %r"
                                        % (head.get("i"), i))
                if "error" in head:
                    raise FileFailure("source_error", "source: %s" % head["error"])
                try:
                    self.patch_frame(tfd, head, allowed, path, write=failure is None)
                except ProtocolError:
                    raise
                except FileFailure as exc:
                    failure = exc
                totals["n_total"] += head["n"]
                totals["ranges_total"] += len(head["ranges"])
                if not head.get("more"):
                    break
            if failure is not None:
                raise failure
            last = head
        if not isinstance(last.get("size"), int) or last["size"] < 0 or not isinstance(last.get("mtime_ns"), int):
            raise ProtocolError("protocol error: the last frame of %s has no size/mtime" % show(path))
        if f.get("source_size") is not None and last["size"] != f["source_size"]:
            raise ProtocolError("protocol error: %s: the source says size %d, the plan %d"
                                % (show(path), last["size"], f["source_size"]))
        return dict(last, **totals)

    def patch_frame(self, tfd, head, allowed, path, write=True):
        n, ranges, chunk = head.get("n"), head.get("ranges"), self.d.chunk
        if not isinstance(n, int) or not isinstance(ranges, list) or n < 0:
            raise ProtocolError("protocol error: a frame without a byte count and ranges")
        if n > FRAME_BYTES:
            raise ProtocolError("protocol error: a frame claims %d bytes, more than the %d a frame may carry; "
                                "nothing read" % (n, FRAME_BYTES))
        total = 0
        for r in ranges:
            if (not isinstance(r, list) or len(r) != 2 or not all(isinstance(x, int) for x in r)
                    or r[0] < 0 or r[1] <= 0):
                raise ProtocolError("protocol error: a malformed range %r" % (r,))
            if allowed is not None and any(c not in allowed for c in range(r[0] // chunk, (r[0] + r[1] - 1) // chunk + 1)):
                raise ProtocolError("protocol error: a frame writes %d bytes at %d, outside the chunks requested "
                                    "for %s" % (r[1], r[0], show(path)))
            total += r[1]
        if total != n:
            raise ProtocolError("protocol error: a frame's ranges hold %d bytes, its header says %d" % (total, n))
        data = read_exact(n)
        if not write:
            return
        try:
            pos = 0
            for o, k in ranges:
                write_all(tfd, data[pos:pos + k], o)
                pos += k
        except OSError as exc:
            raise classify(exc, "write temp file", path)

    def unlink_quiet(self, dfd, name):
        try:
            os.unlink(name, dir_fd=dfd)
            os.fsync(dfd)
        except OSError:
            pass

    def backup(self, pfd, name, ofd, st0, orig_hash, path):
        """Hard-link the original into the run's backup dir (copy if on another filesystem).

        Returns (dir fd, name) when this call created the entry, else None (an entry from an
        interrupted earlier attempt that holds the same original is kept as is).
        """
        brel = path.lstrip(b"/")
        bpfd, bname = open_parent(self.run_fd, brel, create=True)
        created = None
        try:
            try:
                bst = os.lstat(bname, dir_fd=bpfd)
            except FileNotFoundError:
                bst = None
            if bst is not None:
                if not stat.S_ISREG(bst.st_mode):
                    raise FileFailure("backup_conflict", "backup path for %s exists and is not a file" % show(path))
                if (bst.st_dev, bst.st_ino) != (st0.st_dev, st0.st_ino):
                    bfd = os.open(bname, RDONLY_FILE, dir_fd=bpfd)
                    try:
                        old = self.d.of_fd(bfd)
                    finally:
                        os.close(bfd)
                    if old != orig_hash:
                        raise FileFailure("backup_conflict", "the backup dir already holds a different version of "
                                                             "%s; refusing to overwrite a backup" % show(path))
            else:
                try:
                    os.link(name, bname, src_dir_fd=pfd, dst_dir_fd=bpfd, follow_symlinks=False)
                    linked = True
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise classify(exc, "hard-link original into backup dir", path)
                    self.copy_into(ofd, bpfd, bname, st0, path)
                    linked = False
                if linked:
                    # the name may have been swapped between our open and the link: the backup must
                    # be the very inode we copied and hashed
                    lst = os.lstat(bname, dir_fd=bpfd)
                    if (lst.st_dev, lst.st_ino) != (st0.st_dev, st0.st_ino):
                        os.unlink(bname, dir_fd=bpfd)
                        raise FileFailure("target_changed", "target changed during sync: the backup link of %s is "
                                          "not the file that was copied; nothing swapped" % show(path))
                os.fsync(bpfd)
                created = (os.dup(bpfd), bname)
            return created
        finally:
            os.close(bpfd)

    def copy_into(self, ofd, dfd, name, st0, path):
        try:
            bfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        except OSError as exc:
            raise classify(exc, "create backup copy", path)
        try:
            copy_fd(ofd, bfd)
            os.fchown(bfd, st0.st_uid, st0.st_gid)
            os.fchmod(bfd, stat.S_IMODE(st0.st_mode))
            os.utime(bfd, ns=(st0.st_atime_ns, st0.st_mtime_ns))
            os.fsync(bfd)
        except OSError as exc:
            os.unlink(name, dir_fd=dfd)
            raise classify(exc, "write backup copy", path)
        finally:
            os.close(bfd)


# ---------------------------------------------------------------- read (source side)
def reader(plan):
    d = Digest(plan["algo"], plan["mode"], plan["chunk"])
    block = plan["block"]
    roots = [unb64(r) for r in plan["source_roots"]]
    files = dict((f["i"], f) for f in plan["files"])
    root_fds = {}
    current = [None]   # (index, fd, stat) of the file whose requests are being answered

    def close_current():
        if current[0] is not None:
            os.close(current[0][1])
            current[0] = None

    while True:
        line = STDIN.readline()
        if not line:
            close_current()
            return 0
        req = json.loads(line.decode("utf-8"))
        if req.get("ev") == "skip":
            if current[0] is not None and current[0][0] == req.get("i"):
                close_current()
            continue
        f = files[req["i"]]
        try:
            if current[0] is None or current[0][0] != f["i"]:
                close_current()
                current[0] = (f["i"],) + open_source(d, roots, root_fds, f)
            for frame, payload in read_frames(d, block, f, req, current[0][1], current[0][2]):
                STDOUT.write((json.dumps(frame, separators=(",", ":")) + "\n").encode("ascii"))
                if payload:
                    STDOUT.write(payload)
                STDOUT.flush()
        except (FileFailure, OSError) as exc:
            message = (str(exc).replace("production", "source") if isinstance(exc, FileFailure)
                       else "read: %s" % (exc.strerror or exc))
            STDOUT.write((json.dumps({"i": f["i"], "error": message}, separators=(",", ":")) + "\n")
                         .encode("ascii"))
            STDOUT.flush()
            close_current()
            continue
        if req.get("final", True):
            close_current()


def open_source(d, roots, root_fds, f):
    ri = f["root"]
    if ri not in root_fds:
        root_fds[ri] = open_root(roots[ri])
    rel = unb64(f["rel"])
    pfd, name = open_parent(root_fds[ri], rel)
    try:
        fd, st = open_regular(pfd, name, roots[ri], roots[ri] + b"/" + rel)
    finally:
        os.close(pfd)
    if f.get("source_size") is not None and st.st_size != f["source_size"]:
        os.close(fd)
        raise FileFailure("source_changed", "%s changed since the diff (size %d, plan %d)"
                          % (show(rel), st.st_size, f["source_size"]))
    return fd, st


def read_frames(d, block, f, req, fd, st):
    """Frames answering one request: at most FRAME_BYTES of differing blocks each, read FRAME_BYTES
    at a time. The last frame (``more`` false) of the file's final request carries its size, mtime
    and, in live sync, its hash."""
    theirs = dict((int(k), unb64(v)) for k, v in req["blocks"].items())
    chunks = list(req["chunks"])
    final = req.get("final", True)
    if f.get("source_hash") is None and final:
        # live sync: the target does not know the source's size; the last request takes the rest
        have = (st.st_size + d.chunk - 1) // d.chunk
        chunks += [c for c in range((max(chunks) + 1) if chunks else 0, have)]
    ranges, parts, held = [], [], [0]

    def frame(more):
        head = {"i": f["i"], "ranges": [list(r) for r in ranges], "n": held[0], "more": more}
        payload = b"".join(parts)
        del ranges[:], parts[:]
        held[0] = 0
        return head, payload

    step = max(block, (FRAME_BYTES // block) * block)
    for c in chunks:
        mine = theirs.get(c, b"")
        for sub in range(0, d.chunk, step):
            data = os.pread(fd, min(step, d.chunk - sub), c * d.chunk + sub)
            if not data:
                break
            for o in range(0, len(data), block):
                piece = data[o:o + block]
                k = ((sub + o) // block) * BLOCK_DIGEST_BYTES
                if len(mine) >= k + BLOCK_DIGEST_BYTES and mine[k:k + BLOCK_DIGEST_BYTES] == d.block(piece):
                    continue
                if held[0] + len(piece) > FRAME_BYTES:
                    yield frame(True)
                at = c * d.chunk + sub + o
                if ranges and ranges[-1][0] + ranges[-1][1] == at:
                    ranges[-1][1] += len(piece)
                else:
                    ranges.append([at, len(piece)])
                parts.append(piece)
                held[0] += len(piece)
    head, payload = frame(False)
    if final:
        head.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        if f.get("source_hash") is None:
            head["hash"] = d.of_fd(fd)
            if not same_file(st, os.fstat(fd)):
                raise FileFailure("source_changed", "%s is being written to; retry" % show(unb64(f["rel"])))
    yield head, payload


# ---------------------------------------------------------------- rollback (production side)
def rollback(plan):
    """Restore the files the worker names (``plan["files"]``: root, rel, orig_hash, new_hash from
    the approved plan and the worker's own journal). The journal file on production is only
    read for the hash algorithm when the worker does not say, and for its file list only when the
    worker gives none (engine callers without a journal of their own)."""
    backup_dir = unb64(plan["backup_dir"])
    run_id = plan["run_id"]
    try:
        lock_fd = take_writer_lock(backup_dir, run_id, "roll back")
        run_fd = open_run_dir(backup_dir, run_id, create=False)
    except FileFailure as exc:
        if exc.kind in ("locked", "unsafe_backup_dir"):
            emit({"ev": "fatal", "kind": exc.kind, "message": str(exc)})
        else:
            emit({"ev": "fatal", "message": "no backup for run %s: %s" % (run_id, exc)})
        return 2
    try:
        jfd = os.open("journal.jsonl", RDONLY_FILE, dir_fd=run_fd)
    except OSError as exc:
        emit({"ev": "fatal", "message": "run %s has no journal: %s" % (run_id, exc.strerror)})
        return 2
    with os.fdopen(jfd, "rb") as fh:
        records = []
        for l in fh:
            if l.strip().endswith(b"}"):  # a torn last line is ignored
                try:
                    records.append(json.loads(l))
                except ValueError:
                    pass
    start = [r for r in records if r.get("state") == "run_start"]
    if plan.get("files") is not None:
        head = {"algo": plan["algo"], "mode": plan["mode"], "chunk": plan["chunk"], "roots": plan["roots"]}
        items = dict(((r["root"], r["rel"]), r) for r in plan["files"])
    else:
        if not start:
            emit({"ev": "fatal", "message": "journal of run %s has no run_start record" % run_id})
            return 2
        head = start[0]
        items = {}
        for r in records:
            if r.get("state") == "backed_up":
                items[(r["root"], r["rel"])] = r  # latest record per file wins (resumed runs)
    d = Digest(head["algo"], head["mode"], head["chunk"])
    allowed = set(head["roots"])
    journal = Journal(run_fd)
    journal.write({"state": "rollback_start", "pid": os.getpid()})
    summary = {"restored": 0, "unchanged": 0, "failed": 0}
    for (root64, rel64), r in sorted(items.items()):
        base = {"rel": rel64, "root": root64}
        try:
            stop_if_pending()
            if root64 not in allowed:
                raise FileFailure("unsafe_path", "journal names a root outside the run's roots")
            check_rel(unb64(rel64))
            outcome = restore_one(d, run_id, run_fd, unb64(root64), unb64(rel64), r, journal, base)
            summary[outcome] += 1
        except FileFailure as exc:
            summary["failed"] += 1
            state(journal, dict(base, state="rollback_failed", kind=exc.kind, message=str(exc)))
    journal.write(dict(summary, state="rollback_end"))
    emit(dict(summary, ev="end"))
    os.close(lock_fd)
    return 0


def restore_one(d, run_id, run_fd, root, rel, r, journal, base):
    path = root.rstrip(b"/") + b"/" + rel
    rfd = open_root(root)
    try:
        pfd, name = open_parent(rfd, rel)
    finally:
        os.close(rfd)
    bpfd, bname = open_parent(run_fd, path.lstrip(b"/"))
    tname = temp_name(name, run_id + "-rollback")
    bfd = tfd = None
    try:
        remove_leftover(pfd, tname)
        try:
            os.lstat(name, dir_fd=pfd)  # FileNotFoundError: the target is gone
            cur_fd, cur_st = open_regular(pfd, name, root, path)
            try:
                cur = d.of_fd(cur_fd)
            finally:
                os.close(cur_fd)
        except FileNotFoundError:
            cur = None
        if cur == r["orig_hash"]:
            state(journal, dict(base, state="rollback_unchanged"))
            return "unchanged"
        if cur is not None and cur != r["new_hash"]:
            raise FileFailure("target_changed", "%s changed after the sync (hash %s is neither the synced nor "
                                                "the original content); not rolled back" % (show(path), cur[:16]))
        bfd, bst = open_regular(bpfd, bname, b"/", path)
        # a copy, not the link: the backup must stay pristine if the target is written later
        try:
            tfd = os.open(tname, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=pfd)
            copy_fd(bfd, tfd)
            os.fchown(tfd, bst.st_uid, bst.st_gid)
            os.fchmod(tfd, stat.S_IMODE(bst.st_mode))
            copy_xattrs(bfd, tfd)
            os.utime(tfd, ns=(bst.st_atime_ns, bst.st_mtime_ns))
            os.fsync(tfd)
        except OSError as exc:
            raise classify(exc, "copy backup to temp", path)
        got = d.of_fd(tfd)
        if got != r["orig_hash"]:
            raise FileFailure("verify_failed", "backup of %s hashes to %s, the journal recorded %s; not restored"
                              % (show(path), got[:16], r["orig_hash"][:16]))
        STOP["critical"] += 1
        try:
            os.rename(tname, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            os.fsync(pfd)
        except OSError as exc:
            raise classify(exc, "rename over target", path)
        finally:
            STOP["critical"] -= 1
        tfd_closed = tfd
        tfd = None
        os.close(tfd_closed)
        nfd, _st = open_regular(pfd, name, root, path)
        try:
            final = d.of_fd(nfd)
        finally:
            os.close(nfd)
        if final != r["orig_hash"]:
            raise FileFailure("verify_failed", "%s after restore hashes to %s" % (show(path), final[:16]))
        state(journal, dict(base, state="restored", hash=final))
        return "restored"
    except FileFailure:
        if tfd is not None:
            try:
                os.unlink(tname, dir_fd=pfd)
            except OSError:
                pass
        raise
    finally:
        for fd in (bfd, tfd, pfd, bpfd):
            if fd is not None:
                os.close(fd)


def main(argv):
    mode = argv[0] if argv else ""
    if mode in ("apply", "rollback"):
        import signal
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        plan = read_line()
    except StreamEnded:
        return 3
    try:
        if mode == "read":
            return reader(plan)
        if mode == "apply":
            Applier(plan).run()
            return 0
        if mode == "rollback":
            return rollback(plan)
    except Cancelled as exc:
        # the temp file of the file in flight was removed in one(); every target is whole
        sys.stderr.write("E cancelled: %s\n" % exc)
        return 5
    except StreamEnded as exc:
        # the worker went away mid-file: the temp file was removed in one(); the target is untouched
        sys.stderr.write("E stream ended: %s\n" % exc)
        return 4
    except FileFailure as exc:
        emit({"ev": "fatal", "kind": exc.kind, "message": str(exc)})
        return 2
    sys.stderr.write("E unknown mode %r\n" % mode)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(141)
