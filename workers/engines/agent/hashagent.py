#!/usr/bin/env python3
"""understudy hashing agent: walk roots, emit one JSON line per entry.

Sent over SSH on stdin and started by the agent bootstrap (``agent/__init__.py``;
``python3 - ARGS`` with this file on stdin works too), so it must stay a single
stdlib-only file that works on a bare host ``python3`` (3.6+).
Optional speed-ups are tried and fall back silently:

* ``xxhash`` module (xxh3_128), else ``libxxhash.so.0`` through ctypes (present
  on every host that has rsync >= 3.2.3 installed; ctypes calls release the GIL
  so threads scale), else ``blake3`` module, else hashlib sha256 / blake2b.

Why not pipe to ``xxhsum``/``b3sum``: the sync-back step needs *per-chunk*
digests, and those binaries only hash whole files (one process per chunk costs
~1 ms, i.e. ~1 s per GiB at 1 MiB chunks — slower than hashlib). The binaries
are used only by the shell fallback (whole-file mode) in manifest/shell.py.

Output (stdout), JSON lines:
  header  {"agent": "understudy-hashagent", "v": 1, "algo", "mode", "chunk", "roots": [...],
           "rootsb": [base64 roots], "quick", "started_ns": host clock when the walk began}
  entry   {"r": root index, "p": relative path (str) | "pb": base64 of raw bytes,
           "t": "f"|"d"|"l"|"c"|"b"|"p"|"s"|"?", "size", "mode", "uid", "gid", "mtime_ns",
           "nlink", "ino": "dev:ino", "alloc": allocated bytes,
           files: "h": file digest hex, "c": [chunk digest hex, ...] (chunked mode),
           symlinks: "target" | "targetb", devices: "rdev", "unstable": true if it changed
           while being read, "err": message if it could not be read}
  trailer {"end": true, "records": lines before it (header included), "entries", "files", "bytes",
           "errors", "elapsed"}
A missing trailer means the output was truncated: the caller must not trust it.

In chunked mode the file digest is a hash over the chunk digests (one read pass,
one hash pass); in whole mode it is the plain digest of the content, equal to
what ``sha256sum``/``b3sum``/``xxhsum -H2`` print.

Progress (stderr): ``P <bytes done> <bytes total> <files done> <files total>``.

``--negotiate`` (run via the agent bootstrap, which reads exactly the payload's
length from stdin so stdin stays open): print the probe line first, then
read ``{"algo": ..., "mode": ...}`` (or ``{"abort": reason}``) from stdin and go on.
"""
import base64
import errno
import hashlib
import io
import json
import os
import stat
import sys
import threading
import time

TREE_MAGIC = b"understudy-tree-v1"
PREFERENCE = ["xxh3_128", "blake3", "sha256", "blake2b"]


# ---------------------------------------------------------------- hash backends
def _ctypes_xxh3():
    """XXH3-128 from libxxhash via ctypes, or None."""
    try:
        import ctypes
    except Exception:
        return None
    lib = None
    # the soname first: ctypes.util.find_library spawns ldconfig/gcc (slow, and absent on small hosts)
    for name in ("libxxhash.so.0", "libxxhash.so"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        try:
            import ctypes.util
            found = ctypes.util.find_library("xxhash")
            lib = ctypes.CDLL(found) if found else None
        except Exception:
            lib = None
    if lib is None:
        return None

    class H128(ctypes.Structure):
        _fields_ = [("low", ctypes.c_uint64), ("high", ctypes.c_uint64)]

    try:
        one = lib.XXH3_128bits
        one.restype = H128
        one.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        create = lib.XXH3_createState
        create.restype = ctypes.c_void_p
        free = lib.XXH3_freeState
        free.argtypes = [ctypes.c_void_p]
        reset = lib.XXH3_128bits_reset
        reset.argtypes = [ctypes.c_void_p]
        update = lib.XXH3_128bits_update
        update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        final = lib.XXH3_128bits_digest
        final.restype = H128
        final.argtypes = [ctypes.c_void_p]
    except AttributeError:
        return None

    def canon(h):
        # canonical form (big-endian high then low) = xxhsum -H2 = xxhash.xxh3_128().digest()
        return h.high.to_bytes(8, "big") + h.low.to_bytes(8, "big")

    def addr(buf):
        # buf is a bytearray or a *prefix* memoryview of one (see Hasher.hash_file):
        # from_buffer shares its memory, so nothing is copied
        obj = buf.obj if isinstance(buf, memoryview) else buf
        base = (ctypes.c_char * len(obj)).from_buffer(obj)
        return ctypes.addressof(base), len(buf), base

    def chunk(buf):
        if isinstance(buf, (bytes,)):
            return canon(one(buf, len(buf)))
        a, n, keep = addr(buf)
        return canon(one(a, n))

    class Stream(object):
        def __init__(self):
            self.st = create()
            reset(self.st)

        def update(self, buf):
            if isinstance(buf, bytes):
                update(self.st, buf, len(buf))
            else:
                a, n, keep = addr(buf)
                update(self.st, a, n)

        def digest(self):
            d = canon(final(self.st))
            free(self.st)
            self.st = None
            return d

    return chunk, Stream


_BACKENDS = None


def backends():
    """name -> (one-shot digest function, streaming hasher factory, source). Probed once."""
    global _BACKENDS
    if _BACKENDS is not None:
        return _BACKENDS
    found = {}
    try:
        import xxhash  # type: ignore

        if hasattr(xxhash, "xxh3_128"):
            found["xxh3_128"] = (lambda b: xxhash.xxh3_128(b).digest(), xxhash.xxh3_128, "xxhash-module")
    except Exception:
        pass
    if "xxh3_128" not in found:
        c = _ctypes_xxh3()
        if c is not None:
            found["xxh3_128"] = (c[0], c[1], "libxxhash-ctypes")
    try:
        import blake3  # type: ignore

        found["blake3"] = (lambda b: blake3.blake3(b).digest(), blake3.blake3, "blake3-module")
    except Exception:
        pass
    found["sha256"] = (lambda b: hashlib.sha256(b).digest(), hashlib.sha256, "hashlib")
    found["blake2b"] = (lambda b: hashlib.blake2b(b, digest_size=32).digest(),
                        lambda: hashlib.blake2b(digest_size=32), "hashlib")
    _BACKENDS = found
    return found


def backend_source(name):
    return backends()[name][2]


# ---------------------------------------------------------------- output
class Out(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0  # lines written; the trailer reports it so the reader can detect lost lines
        self.w = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else sys.stdout

    def emit(self, obj):
        line = (json.dumps(obj, separators=(",", ":")) + "\n").encode("ascii")
        with self.lock:
            self.w.write(line)
            self.count += 1

    def flush(self):
        with self.lock:
            self.w.flush()


def put_path(rec, key, raw):
    """Path bytes -> JSON: plain str when valid UTF-8, else base64 under key+'b'."""
    try:
        rec[key] = raw.decode("utf-8")
    except UnicodeDecodeError:
        rec[key + "b"] = base64.b64encode(raw).decode("ascii")


TYPES = [(stat.S_ISREG, "f"), (stat.S_ISDIR, "d"), (stat.S_ISLNK, "l"), (stat.S_ISCHR, "c"),
         (stat.S_ISBLK, "b"), (stat.S_ISFIFO, "p"), (stat.S_ISSOCK, "s")]


def type_of(mode):
    for test, code in TYPES:
        if test(mode):
            return code
    return "?"


def meta(st):
    rec = {"t": type_of(st.st_mode), "size": st.st_size, "mode": stat.S_IMODE(st.st_mode),
           "uid": st.st_uid, "gid": st.st_gid, "mtime_ns": st.st_mtime_ns, "nlink": st.st_nlink,
           "ino": "%d:%d" % (st.st_dev, st.st_ino)}
    if hasattr(st, "st_blocks"):
        rec["alloc"] = st.st_blocks * 512
    return rec


# ---------------------------------------------------------------- walk
def walk(roots, out, errors):
    """Yield (root index, rel bytes, abs bytes, stat) for every entry; one filesystem per root."""
    for ri, root in enumerate(roots):
        try:
            st = os.lstat(root)
        except OSError as exc:
            rec = {"r": ri, "p": "", "t": "?", "err": "lstat: %s" % (exc.strerror or exc)}
            out.emit(rec)
            errors[0] += 1
            continue
        dev = st.st_dev
        yield ri, b"", root, st
        if not stat.S_ISDIR(st.st_mode):
            continue
        stack = [(b"", root)]
        while stack:
            rel, path = stack.pop()
            try:
                it = list(os.scandir(path))
            except OSError as exc:
                rec = {"r": ri, "t": "d", "err": "scandir: %s" % (exc.strerror or exc)}
                put_path(rec, "p", rel)
                out.emit(rec)
                errors[0] += 1
                continue
            it.sort(key=lambda e: e.name)
            for entry in it:
                name = entry.name
                crel = rel + b"/" + name if rel else name
                try:
                    est = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    rec = {"r": ri, "t": "?", "err": "lstat: %s" % (exc.strerror or exc)}
                    put_path(rec, "p", crel)
                    out.emit(rec)
                    errors[0] += 1
                    continue
                yield ri, crel, entry.path, est
                # stay on one filesystem: list a mount point, never descend into it
                if stat.S_ISDIR(est.st_mode) and est.st_dev == dev:
                    stack.append((crel, entry.path))


# ---------------------------------------------------------------- hashing
class Hasher(object):
    def __init__(self, algo, mode, chunk_size, quick):
        self.algo, self.mode, self.chunk_size, self.quick = algo, mode, chunk_size, quick
        self.one, self.stream, _source = backends()[algo]
        self.lock = threading.Lock()
        self.bytes_done = 0
        self.files_done = 0
        self._zero = None

    def zero_digest(self):
        with self.lock:
            if self._zero is None:
                self._zero = self.one(bytes(self.chunk_size))
            return self._zero

    def add(self, n):
        with self.lock:
            self.bytes_done += n

    def hash_file(self, path, rec):
        """Fill rec with digests or an error. Never raises."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            try:
                fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))
            except PermissionError:
                fd = os.open(path, flags)  # O_NOATIME needs ownership or CAP_FOWNER
        except OSError as exc:
            rec["err"] = "open: %s" % (exc.strerror or exc)
            return
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                # replaced between walk and open (e.g. by a fifo): report, do not hash
                rec["err"] = "changed type while scanning"
                return
            f = io.FileIO(fd, "r", closefd=False)
            buf = bytearray(self.chunk_size)
            mv = memoryview(buf)
            chunks = []
            whole = self.stream() if self.mode == "whole" else None
            total = 0
            size = before.st_size
            chunk = self.chunk_size
            # sparse file: whole chunks inside a hole are not read, they get the all-zero chunk digest
            # (identical to reading the zeros, so a sparse and a dense copy still compare equal)
            skip_holes = (whole is None and hasattr(os, "SEEK_DATA") and hasattr(before, "st_blocks")
                          and before.st_blocks * 512 < size)
            while True:
                if skip_holes and total + chunk <= size:
                    try:
                        data_at = os.lseek(fd, total, os.SEEK_DATA)
                    except OSError as exc:
                        data_at = size if exc.errno == errno.ENXIO else total  # ENXIO: only a hole remains
                    holes = (min(data_at, size) - total) // chunk
                    if holes > 0:
                        zero = self.zero_digest()
                        for _ in range(holes):
                            chunks.append(zero)
                        total += holes * chunk
                        self.add(holes * chunk)
                    os.lseek(fd, total, os.SEEK_SET)
                    if total >= size:
                        break
                n = 0
                while n < chunk:  # fill the whole chunk: short reads must not shift boundaries
                    got = f.readinto(mv[n:])
                    if not got:
                        break
                    n += got
                if n == 0:
                    break
                total += n
                piece = mv[:n]  # always a prefix view of buf: no copy
                if whole is not None:
                    whole.update(piece)
                else:
                    chunks.append(self.one(piece))
                self.add(n)
                if n < chunk:
                    break
            after = os.fstat(fd)
            if (after.st_size != before.st_size or after.st_mtime_ns != before.st_mtime_ns
                    or total != after.st_size):
                rec["unstable"] = True  # written to while we read it: digest describes no single state
            if whole is not None:
                rec["h"] = whole.digest().hex()
            else:
                tree = self.stream()
                tree.update(TREE_MAGIC + self.chunk_size.to_bytes(8, "big") + total.to_bytes(8, "big"))
                tree.update(b"".join(chunks))
                rec["h"] = tree.digest().hex()
                rec["c"] = [c.hex() for c in chunks]
            rec["hashed"] = total
        except OSError as exc:
            rec["err"] = "read: %s" % (exc.strerror or exc)
            rec.pop("h", None)
            rec.pop("c", None)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- main
def probe():
    found = backends()
    algos = [a for a in PREFERENCE if a in found]
    return {"agent": "understudy-hashagent", "v": 1, "algos": algos,
            "sources": dict((a, backend_source(a)) for a in algos),
            "python": "%d.%d.%d" % sys.version_info[:3], "cpus": os.cpu_count() or 1}


def parse(argv):
    opts = {"algo": None, "mode": "chunked", "chunk": 1 << 20, "threads": 0, "quick": False,
            "interval": 0.25, "probe": False, "negotiate": False, "roots": []}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--probe":
            opts["probe"] = True
        elif a == "--algo":
            i += 1
            opts["algo"] = argv[i]
        elif a == "--whole":
            opts["mode"] = "whole"
        elif a == "--chunk-size":
            i += 1
            opts["chunk"] = int(argv[i])
        elif a == "--threads":
            i += 1
            opts["threads"] = int(argv[i])
        elif a == "--negotiate":
            opts["negotiate"] = True
        elif a == "--quick":
            opts["quick"] = True
        elif a == "--progress-interval":
            i += 1
            opts["interval"] = float(argv[i])
        elif a == "--":
            opts["roots"].extend(argv[i + 1:])
            break
        else:
            opts["roots"].append(a)
        i += 1
    return opts


def main(argv):
    opts = parse(argv)
    if opts["probe"]:
        sys.stdout.write(json.dumps(probe()) + "\n")
        return 0
    if opts["negotiate"]:
        # one process for probe and hashing (saves a python3 start and a round trip): print what we
        # have, then the controller answers on stdin with what BOTH sides have in common
        sys.stdout.write(json.dumps(probe()) + "\n")
        sys.stdout.flush()
        line = sys.stdin.buffer.readline()
        try:
            choice = json.loads(line.decode("utf-8"))
        except ValueError:
            choice = {"abort": "no choice received"}
        if "abort" in choice:
            sys.stderr.write("E negotiation aborted: %s\n" % choice["abort"])
            return 4
        opts["algo"], opts["mode"] = choice["algo"], choice["mode"]
    found = backends()
    algo = opts["algo"] or [a for a in PREFERENCE if a in found][0]
    if algo not in found:
        sys.stderr.write("E algorithm %s is not available on this host\n" % algo)
        return 3
    if opts["chunk"] < 4096:
        sys.stderr.write("E chunk size must be >= 4096\n")
        return 2
    roots = [os.fsencode(r) for r in opts["roots"]]
    if not roots:
        sys.stderr.write("E no roots given\n")
        return 2
    start = time.time()
    out = Out()
    out.emit({"agent": "understudy-hashagent", "v": 1, "algo": algo, "mode": opts["mode"],
              "started_ns": time.time_ns() if hasattr(time, "time_ns") else int(start * 1e9),
              "source": backend_source(algo), "chunk": opts["chunk"], "quick": opts["quick"],
              "roots": [r.decode("utf-8", "surrogateescape") for r in roots],
              "rootsb": [base64.b64encode(r).decode("ascii") for r in roots]})
    errors = [0]
    # 1. walk everything first: gives the byte total for progress/ETA and lets hard links share one hash
    files = []  # (path, [records sharing that inode])
    by_inode = {}
    entries = 0
    total_bytes = 0
    for ri, rel, path, st in walk(roots, out, errors):
        entries += 1
        rec = {"r": ri}
        put_path(rec, "p", rel)
        rec.update(meta(st))
        t = rec["t"]
        if t == "l":
            try:
                put_path(rec, "target", os.readlink(path))
            except OSError as exc:
                rec["err"] = "readlink: %s" % (exc.strerror or exc)
                errors[0] += 1
        elif t in ("c", "b"):
            rec["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        if t != "f" or opts["quick"]:
            out.emit(rec)
            continue
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in by_inode:
            by_inode[key][1].append(rec)  # same inode: hash once, copy digests
            continue
        job = (path, [rec])
        if st.st_nlink > 1:
            by_inode[key] = job
        files.append(job)
        total_bytes += st.st_size
    hasher = Hasher(algo, opts["mode"], opts["chunk"], opts["quick"])
    done = threading.Event()

    def progress():
        last = None
        while True:
            stop = done.wait(opts["interval"])
            now = (hasher.bytes_done, hasher.files_done)
            if now != last or stop:
                sys.stderr.write("P %d %d %d %d\n" % (now[0], total_bytes, now[1], len(files)))
                sys.stderr.flush()
                last = now
            if stop:
                return

    # 2. hash: largest first so one huge file does not start last and serialize the tail
    files.sort(key=lambda j: -j[1][0]["size"])
    lock = threading.Lock()
    pos = [0]

    def worker():
        while True:
            with lock:
                if pos[0] >= len(files):
                    return
                path, recs = files[pos[0]]
                pos[0] += 1
            first = recs[0]
            try:
                hasher.hash_file(path, first)
            except Exception as exc:  # never lose a record: an entry without digest is reported, not dropped
                first.pop("h", None)
                first.pop("c", None)
                first["err"] = "agent: %s: %s" % (type(exc).__name__, exc)
            with lock:
                hasher.files_done += 1
                if "err" in first:
                    errors[0] += 1
            for rec in recs:
                for k in ("h", "c", "err", "unstable", "hashed"):
                    if k in first:
                        rec[k] = first[k]
                out.emit(rec)

    nthreads = opts["threads"] or min(8, max(1, os.cpu_count() or 1))
    pt = threading.Thread(target=progress)
    pt.daemon = True
    pt.start()
    threads = [threading.Thread(target=worker) for _ in range(min(nthreads, max(1, len(files))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    pt.join()
    out.emit({"end": True, "records": out.count, "entries": entries, "files": len(files), "bytes": hasher.bytes_done,
              "errors": errors[0], "elapsed": round(time.time() - start, 3)})
    out.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(141)
