"""minidb storage: 8 KiB checksummed pages, a control file, a write log with LSNs.

Layout of a database home (default /var/lib/minidb)::

    control.json        files (id -> name), applied_lsn, next_lsn
    data/<name>.dbf     page 0 = file header, pages 1.. = row pages
    wal/wal.log         one JSON record per line: lsn, file id, key, value, crc
    lock                flock held by whoever writes (the service, reinit, replay)

Page = 28-byte header (magic, file id, page no, LSN, CRC32, row count, bytes used)
+ payload. The CRC covers the header (with the CRC field zeroed) and the payload, so
a scribbled page is detected by ``verify_file`` exactly like Oracle's DBVERIFY would.

Page placement is a pure function of the on-disk state (first page with room), and
pages serialise canonically, so re-initialising from an export and replaying the
same log records yields byte-identical datafiles: the product's diff step can then
tell "corrupted on production" from "merely newer on production".
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import io
import json
import os
import random
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

PAGE_SIZE = 8192
MAGIC = b"MDB1"
HEADER = struct.Struct(">4sIIQIHH")  # magic, file_id, page_no, lsn, crc, nrows, used
PAYLOAD_SIZE = PAGE_SIZE - HEADER.size
ROW_HDR = struct.Struct(">HH")
EXPORT_FORMAT = "minidb-export/1"
DEFAULT_HOME = "/var/lib/minidb"
EXTEND_PAGES = 16


class MiniDBError(RuntimeError):
    """A user-facing minidb failure (message is printed by the CLIs)."""


class PageCorrupt(MiniDBError):
    """A page failed its header or checksum checks."""


def _crc(header_no_crc: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(header_no_crc)) & 0xFFFFFFFF


def encode_page(file_id: int, page_no: int, lsn: int, rows: list[tuple[bytes, bytes]] | None = None,
                raw_payload: bytes | None = None) -> bytes:
    """Canonical page bytes: header + rows packed from the start + zero fill."""
    if raw_payload is not None:
        body = raw_payload
        nrows = 0
    else:
        rows = rows or []
        body = b"".join(ROW_HDR.pack(len(k), len(v)) + k + v for k, v in rows)
        nrows = len(rows)
    if len(body) > PAYLOAD_SIZE:
        raise MiniDBError(f"page {page_no} overflow ({len(body)} > {PAYLOAD_SIZE})")
    payload = body + b"\0" * (PAYLOAD_SIZE - len(body))
    hdr0 = HEADER.pack(MAGIC, file_id, page_no, lsn, 0, nrows, len(body))
    crc = _crc(hdr0, payload)
    return HEADER.pack(MAGIC, file_id, page_no, lsn, crc, nrows, len(body)) + payload


@dataclass
class Page:
    file_id: int
    page_no: int
    lsn: int
    rows: list[tuple[bytes, bytes]]
    used: int
    raw: bytes = b""


def decode_page(data: bytes, *, expect_page: int | None = None, expect_file: int | None = None,
                header_page: bool = False) -> Page:
    """Parse and check one page; raises PageCorrupt with the reason."""
    if len(data) != PAGE_SIZE:
        raise PageCorrupt(f"short page ({len(data)} bytes)")
    magic, file_id, page_no, lsn, crc, nrows, used = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PageCorrupt(f"bad magic {magic!r}")
    payload = data[HEADER.size:]
    calc = _crc(HEADER.pack(magic, file_id, page_no, lsn, 0, nrows, used), payload)
    if calc != crc:
        raise PageCorrupt(f"checksum mismatch (stored 0x{crc:08x}, computed 0x{calc:08x})")
    if expect_page is not None and page_no != expect_page:
        raise PageCorrupt(f"page number in header is {page_no}, expected {expect_page}")
    if expect_file is not None and file_id != expect_file:
        raise PageCorrupt(f"file id in header is {file_id}, expected {expect_file}")
    if used > PAYLOAD_SIZE:
        raise PageCorrupt(f"used bytes {used} exceed payload")
    if header_page:
        return Page(file_id, page_no, lsn, [], used, payload[:used])
    rows: list[tuple[bytes, bytes]] = []
    off = 0
    for _ in range(nrows):
        if off + ROW_HDR.size > used:
            raise PageCorrupt("row directory runs past used bytes")
        kl, vl = ROW_HDR.unpack_from(payload, off)
        off += ROW_HDR.size
        if off + kl + vl > used:
            raise PageCorrupt("row runs past used bytes")
        rows.append((payload[off:off + kl], payload[off + kl:off + kl + vl]))
        off += kl + vl
    if off != used:
        raise PageCorrupt(f"rows use {off} bytes, header says {used}")
    return Page(file_id, page_no, lsn, rows, used)


def header_payload(name: str, file_id: int) -> bytes:
    return json.dumps({"name": name, "file_id": file_id, "page_size": PAGE_SIZE, "format": "minidb/1"},
                      sort_keys=True).encode()


# --------------------------------------------------------------------------- control / WAL

def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def wal_record(lsn: int, file_id: int, key: str, value: str) -> bytes:
    body = json.dumps([lsn, file_id, key, value], ensure_ascii=False, separators=(",", ":"))
    crc = zlib.crc32(body.encode()) & 0xFFFFFFFF
    return (json.dumps({"lsn": lsn, "f": file_id, "k": key, "v": value, "c": crc},
                       ensure_ascii=False, separators=(",", ":")) + "\n").encode()


@dataclass(frozen=True)
class WalRecord:
    lsn: int
    file_id: int
    key: str
    value: str


def read_wal(stream: IO[bytes]) -> Iterator[WalRecord]:
    """Records of a write log; a torn last line (crash mid-write) ends the log, a bad CRC elsewhere raises."""
    for lineno, line in enumerate(stream, 1):
        if not line.endswith(b"\n"):
            return  # torn tail
        try:
            d = json.loads(line)
            body = json.dumps([d["lsn"], d["f"], d["k"], d["v"]], ensure_ascii=False, separators=(",", ":"))
        except (ValueError, KeyError) as exc:
            raise MiniDBError(f"write log line {lineno} is unreadable: {exc}") from exc
        if zlib.crc32(body.encode()) & 0xFFFFFFFF != d["c"]:
            raise MiniDBError(f"write log line {lineno} (lsn {d['lsn']}) fails its checksum")
        yield WalRecord(d["lsn"], d["f"], d["k"], d["v"])


# --------------------------------------------------------------------------- database

@dataclass
class _File:
    file_id: int
    name: str
    path: Path
    fh: IO[bytes]
    npages: int
    index: dict[bytes, int] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)  # free payload bytes per page (page 0 = 0)
    bad_pages: dict[int, str] = field(default_factory=dict)
    last_written: int = 1  # highest page with LSN > 0: new rows go there or to the next page
    max_lsn: int = 0       # newest change in this datafile: its redo point for a replay


class Database:
    """Single-writer access to a database home (holds an exclusive flock while open)."""

    def __init__(self, home: str | os.PathLike[str] = DEFAULT_HOME, *, create: bool = False,
                 fsync: bool = True) -> None:
        self.home = Path(home)
        self.fsync = fsync
        if create:
            (self.home / "data").mkdir(parents=True, exist_ok=True)
            (self.home / "wal").mkdir(parents=True, exist_ok=True)
            if not (self.home / "control.json").exists():
                _atomic_write(self.home / "control.json",
                              json.dumps({"format": "minidb/1", "files": {}, "applied_lsn": 0,
                                          "next_lsn": 1}, indent=1).encode())
        if not (self.home / "control.json").exists():
            raise MiniDBError(f"no minidb database at {self.home} (control.json missing; run minidb-init)")
        self._lockfh = open(self.home / "lock", "a+")
        try:
            fcntl.flock(self._lockfh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfh.close()
            raise MiniDBError(f"database {self.home} is in use (is minidb-service running? stop it first)")
        self.control = json.loads((self.home / "control.json").read_text())
        self.files: dict[int, _File] = {}
        self.by_name: dict[str, int] = {}
        for fid, meta in sorted(self.control["files"].items(), key=lambda kv: int(kv[0])):
            self._open_file(int(fid), meta["name"])
        self.applied_lsn: int = self.control["applied_lsn"]
        self.next_lsn: int = self.control["next_lsn"]
        self._wal = open(self.home / "wal" / "wal.log", "ab")
        self._recover()

    # -- files
    def datafile_path(self, name: str) -> Path:
        return self.home / "data" / f"{name}.dbf"

    def _open_file(self, file_id: int, name: str) -> None:
        path = self.datafile_path(name)
        if not path.exists():
            raise MiniDBError(f"datafile {path} is missing")
        fh = open(path, "r+b")
        size = os.fstat(fh.fileno()).st_size
        f = _File(file_id, name, path, fh, size // PAGE_SIZE)
        f.free = [0] * f.npages
        for p in range(1, f.npages):
            try:
                page = decode_page(os.pread(fh.fileno(), PAGE_SIZE, p * PAGE_SIZE), expect_page=p,
                                   expect_file=file_id)
            except PageCorrupt as exc:
                f.bad_pages[p] = str(exc)
                continue
            f.free[p] = PAYLOAD_SIZE - page.used
            f.max_lsn = max(f.max_lsn, page.lsn)
            if page.lsn:
                f.last_written = p
            for k, _v in page.rows:
                f.index[k] = p
        self.files[file_id] = f
        self.by_name[name] = file_id

    def create_file(self, name: str, pages: int = 64) -> int:
        """Create a datafile of ``pages`` row pages (plus the header page); returns its file id."""
        if name in self.by_name:
            raise MiniDBError(f"datafile {name!r} already exists")
        if "/" in name or not name.strip():
            raise MiniDBError(f"invalid datafile name {name!r}")
        file_id = max(self.files, default=0) + 1
        path = self.datafile_path(name)
        with open(path, "wb") as fh:
            fh.write(encode_page(file_id, 0, 0, raw_payload=header_payload(name, file_id)))
            for p in range(1, pages + 1):
                fh.write(encode_page(file_id, p, 0))
            fh.flush()
            os.fsync(fh.fileno())
        self.control["files"][str(file_id)] = {"name": name}
        self._write_control()
        self._open_file(file_id, name)
        return file_id

    def _file(self, name: str) -> _File:
        try:
            return self.files[self.by_name[name]]
        except KeyError:
            raise MiniDBError(f"no datafile named {name!r} (have: {sorted(self.by_name)})") from None

    def _read(self, f: _File, p: int) -> Page:
        if p in f.bad_pages:
            raise PageCorrupt(f"{f.name}: page {p} is corrupt: {f.bad_pages[p]}")
        return decode_page(os.pread(f.fh.fileno(), PAGE_SIZE, p * PAGE_SIZE), expect_page=p, expect_file=f.file_id)

    def _write(self, f: _File, p: int, lsn: int, rows: list[tuple[bytes, bytes]]) -> None:
        if lsn:
            f.last_written = max(f.last_written, p)
            f.max_lsn = max(f.max_lsn, lsn)
        data = encode_page(f.file_id, p, lsn, rows)
        os.pwrite(f.fh.fileno(), data, p * PAGE_SIZE)
        used = sum(ROW_HDR.size + len(k) + len(v) for k, v in rows)
        f.free[p] = PAYLOAD_SIZE - used

    def _extend(self, f: _File) -> None:
        start = f.npages
        blob = b"".join(encode_page(f.file_id, p, 0) for p in range(start, start + EXTEND_PAGES))
        os.pwrite(f.fh.fileno(), blob, start * PAGE_SIZE)
        f.npages += EXTEND_PAGES
        f.free.extend([PAYLOAD_SIZE] * EXTEND_PAGES)

    # -- writes
    def put(self, name: str, key: str, value: str) -> int:
        """Log then apply one row write; returns its LSN."""
        f = self._file(name)
        k, v = key.encode(), value.encode()
        if ROW_HDR.size + len(k) + len(v) > PAYLOAD_SIZE or len(k) > 65535:
            raise MiniDBError("row too large for a page")
        lsn = self.next_lsn
        self._wal.write(wal_record(lsn, f.file_id, key, value))
        self._wal.flush()
        if self.fsync:
            os.fsync(self._wal.fileno())
        self.next_lsn = lsn + 1
        self._apply(f, k, v, lsn)
        return lsn

    def _apply(self, f: _File, k: bytes, v: bytes, lsn: int) -> None:
        need = ROW_HDR.size + len(k) + len(v)
        p = f.index.get(k)
        if p is not None:
            page = self._read(f, p)
            if page.lsn >= lsn:
                self.applied_lsn = max(self.applied_lsn, lsn)
                return  # redo of a write this page already has
            rows = list(page.rows)
            i = next(i for i, (rk, _) in enumerate(rows) if rk == k)
            old = ROW_HDR.size + len(rows[i][0]) + len(rows[i][1])
            if f.free[p] + old >= need:
                rows[i] = (k, v)
                self._write(f, p, lsn, rows)
                self.applied_lsn = max(self.applied_lsn, lsn)
                return
            del rows[i]
            self._write(f, p, lsn, rows)
            del f.index[k]
        # Append-mostly heap: the last written page if the row fits, else the following one(s).
        # A pure function of the on-disk state (page LSNs), so a re-init + replay lays rows out
        # exactly like production did, and O(1) per insert however large the file is.
        target = f.last_written
        while target in f.bad_pages or target >= f.npages or f.free[target] < need:
            target += 1
            if target >= f.npages:
                self._extend(f)
        page = self._read(f, target)
        self._write(f, target, lsn, page.rows + [(k, v)])
        f.index[k] = target
        f.last_written = max(f.last_written, target)
        self.applied_lsn = max(self.applied_lsn, lsn)

    def needs_redo(self, rec: WalRecord) -> bool:
        """Would applying ``rec`` change anything? (Page LSNs say whether a page has it.)"""
        f = self.files.get(rec.file_id)
        if f is None:
            return True  # apply_record reports the unknown file clearly
        p = f.index.get(rec.key.encode())
        if p is None:
            return True
        try:
            return self._read(f, p).lsn < rec.lsn
        except PageCorrupt:
            return True

    def apply_record(self, rec: WalRecord, *, log: bool) -> None:
        """Apply a record from some write log (replay); ``log`` also appends it to our own log."""
        f = self.files.get(rec.file_id)
        if f is None:
            raise MiniDBError(f"write log lsn {rec.lsn} refers to unknown file id {rec.file_id}")
        if log:
            self._wal.write(wal_record(rec.lsn, rec.file_id, rec.key, rec.value))
        self._apply(f, rec.key.encode(), rec.value.encode(), rec.lsn)
        self.next_lsn = max(self.next_lsn, rec.lsn + 1)

    def _recover(self) -> None:
        """Redo log records newer than the last checkpoint (page LSNs make this idempotent)."""
        path = self.home / "wal" / "wal.log"
        with open(path, "rb") as fh:
            for rec in read_wal(fh):
                self.next_lsn = max(self.next_lsn, rec.lsn + 1)
                if rec.lsn > self.control["applied_lsn"] and rec.file_id in self.files:
                    f = self.files[rec.file_id]
                    try:
                        self._apply(f, rec.key.encode(), rec.value.encode(), rec.lsn)
                    except PageCorrupt:
                        pass  # the page is damaged; dbverify reports it, recovery cannot fix it

    # -- reads
    def get(self, name: str, key: str) -> str | None:
        f = self._file(name)
        p = f.index.get(key.encode())
        if p is None:
            return None
        for k, v in self._read(f, p).rows:
            if k == key.encode():
                return v.decode()
        return None

    def count(self, name: str | None = None) -> int:
        if name is not None:
            return len(self._file(name).index)
        return sum(len(f.index) for f in self.files.values())

    def health(self) -> dict:
        return {"status": "up", "applied_lsn": self.applied_lsn, "next_lsn": self.next_lsn,
                "files": {f.name: {"rows": len(f.index), "pages": f.npages, "bad_pages": sorted(f.bad_pages)}
                          for f in self.files.values()}}

    # -- durability
    def _write_control(self) -> None:
        self.control["applied_lsn"] = getattr(self, "applied_lsn", self.control.get("applied_lsn", 0))
        self.control["next_lsn"] = getattr(self, "next_lsn", self.control.get("next_lsn", 1))
        _atomic_write(self.home / "control.json", json.dumps(self.control, indent=1, sort_keys=True).encode())

    def checkpoint(self) -> None:
        """Flush datafiles and record the applied LSN so recovery starts after it."""
        self._wal.flush()
        os.fsync(self._wal.fileno())
        for f in self.files.values():
            os.fsync(f.fh.fileno())
        self._write_control()

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self.checkpoint()
        for f in self.files.values():
            f.fh.close()
        self._wal.close()
        self._lockfh.close()
        self._closed = True

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- export
    def export(self, out: str | os.PathLike[str]) -> int:
        """Write a consistent logical export (all rows page by page + the LSN); returns the LSN."""
        self.checkpoint()
        lsn = self.applied_lsn
        files_meta = []
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        with tarfile.open(tmp, "w:gz") as tar:
            for f in self.files.values():
                pages = []
                for p in range(1, f.npages):
                    page = self._read(f, p)  # raises on a corrupt page: never export damage
                    if page.rows or page.lsn:
                        pages.append({"page": p, "lsn": page.lsn,
                                      "rows": [[k.decode(), v.decode()] for k, v in page.rows]})
                blob = json.dumps({"file_id": f.file_id, "name": f.name, "npages": f.npages,
                                   "pages": pages}, ensure_ascii=False).encode()
                _tar_add(tar, f"files/{f.file_id}.json", blob)
                files_meta.append({"file_id": f.file_id, "name": f.name, "npages": f.npages,
                                   "rows": len(f.index)})
            manifest = {"format": EXPORT_FORMAT, "lsn": lsn,
                        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        "files": files_meta}
            _tar_add(tar, "manifest.json", json.dumps(manifest, indent=1).encode())
        os.replace(tmp, out)
        return lsn


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# --------------------------------------------------------------------------- operations

def init_database(home: str | os.PathLike[str], files: Iterable[str] = (), pages: int = 64) -> None:
    with Database(home, create=True) as db:
        for name in files:
            db.create_file(name, pages)


def export_database(home: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """Offline export (the service does the same under its own lock)."""
    with Database(home) as db:
        return db.export(out)


def read_export(path: str | os.PathLike[str]) -> tuple[dict, dict[int, dict]]:
    try:
        tar = tarfile.open(path, "r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise MiniDBError(f"cannot read export {path}: {exc}") from exc
    with tar:
        def load(name: str) -> dict:
            member = tar.extractfile(name)
            if member is None:
                raise MiniDBError(f"export {path} lacks {name}")
            return json.loads(member.read())
        try:
            manifest = load("manifest.json")
        except KeyError:
            raise MiniDBError(f"{path} is not a minidb export (no manifest.json)") from None
        if manifest.get("format") != EXPORT_FORMAT:
            raise MiniDBError(f"{path}: unsupported export format {manifest.get('format')!r}")
        files = {m["file_id"]: load(f"files/{m['file_id']}.json") for m in manifest["files"]}
    return manifest, files


def reinit_database(home: str | os.PathLike[str], export: str | os.PathLike[str],
                    progress=None) -> int:
    """Vendor re-initialisation: rebuild every datafile from an export; returns the export LSN.

    Datafiles are rebuilt page for page (same page numbers and LSNs), the control file is
    reset to the export LSN and the local write log emptied: ``replay_wal`` then catches up.
    """
    home = Path(home)
    manifest, files = read_export(export)
    (home / "data").mkdir(parents=True, exist_ok=True)
    (home / "wal").mkdir(parents=True, exist_ok=True)
    lockfh = open(home / "lock", "a+")
    try:
        try:
            fcntl.flock(lockfh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MiniDBError(f"database {home} is in use (stop minidb-service before re-init)") from None
        control = {"format": "minidb/1", "files": {}, "applied_lsn": manifest["lsn"],
                   "next_lsn": manifest["lsn"] + 1}
        for fid, fdata in sorted(files.items()):
            name = fdata["name"]
            by_page = {p["page"]: p for p in fdata["pages"]}
            path = home / "data" / f"{name}.dbf"
            tmp = path.with_name(path.name + ".reinit")
            with open(tmp, "wb") as fh:
                fh.write(encode_page(fid, 0, 0, raw_payload=header_payload(name, fid)))
                for p in range(1, fdata["npages"]):
                    pg = by_page.get(p)
                    rows = [(k.encode(), v.encode()) for k, v in pg["rows"]] if pg else []
                    fh.write(encode_page(fid, p, pg["lsn"] if pg else 0, rows))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            control["files"][str(fid)] = {"name": name}
            if progress:
                progress(f"reinit {name}: {fdata['npages']} pages, "
                         f"{sum(len(p['rows']) for p in fdata['pages'])} rows")
        with open(home / "wal" / "wal.log", "wb") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        _atomic_write(home / "control.json", json.dumps(control, indent=1, sort_keys=True).encode())
    finally:
        lockfh.close()
    return manifest["lsn"]


def replay_wal(home: str | os.PathLike[str], wal: IO[bytes] | None = None, *,
               until_lsn: int | None = None, since_lsn: int | None = None,
               progress=None, progress_every: int = 200) -> tuple[int, int]:
    """Replay write-log records newer than the applied LSN; returns (applied count, final LSN).

    ``wal`` is another host's write log (the catch-up on a clone); default: our own log.
    ``progress`` receives lines ``lag_lsn=<n> applied=<n> lsn=<n> target_lsn=<n>``.
    """
    with Database(home) as db:
        own = wal is None
        if own:
            wal = open(db.home / "wal" / "wal.log", "rb")
        try:
            records = list(read_wal(wal))
        finally:
            if own:
                wal.close()
        # Redo from the oldest datafile's own point: a datafile restored from the backup (the
        # sync-back of a repaired file) is older than the control file says, and page LSNs make
        # re-applying a record that a page already has a no-op.
        redo_point = min([db.applied_lsn] + [f.max_lsn for f in db.files.values()])
        start = redo_point if since_lsn is None else since_lsn
        todo = [r for r in records if r.lsn > start and (until_lsn is None or r.lsn <= until_lsn)]
        if since_lsn is None:
            todo = [r for r in todo if db.needs_redo(r)]
        target = todo[-1].lsn if todo else max(start, db.applied_lsn)
        behind = todo[0].lsn - 1 if todo else target
        applied = 0
        if progress:
            progress(f"lag_lsn={max(0, target - behind)} applied=0 lsn={behind} target_lsn={target}")
        for rec in todo:
            db.apply_record(rec, log=not own)
            applied += 1
            if progress and applied % progress_every == 0 and applied < len(todo):
                progress(f"lag_lsn={target - rec.lsn} applied={applied} lsn={rec.lsn} target_lsn={target}")
        db.applied_lsn = max(db.applied_lsn, target if todo else db.applied_lsn)
        db.checkpoint()
        if progress:
            progress(f"lag_lsn=0 applied={applied} lsn={db.applied_lsn} target_lsn={target}")
        return applied, db.applied_lsn


# --------------------------------------------------------------------------- verify / dump / damage

def verify_file(path: str | os.PathLike[str]) -> dict:
    """DBVERIFY for one datafile: every page's header and checksum; never raises on damage."""
    path = Path(path)
    result: dict = {"path": str(path), "status": "ok", "pages_examined": 0, "bad_pages": [], "rows": 0}
    if not path.exists():
        result.update(status="missing", error=f"file not found: {path}")
        return result
    try:
        fh = open(path, "rb")
    except OSError as exc:
        result.update(status="unreadable", error=str(exc))
        return result
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0 or size % PAGE_SIZE:
            result["bad_pages"].append({"page": size // PAGE_SIZE,
                                        "reason": f"file size {size} is not a whole number of {PAGE_SIZE}-byte pages"})
        file_id = None
        try:
            hdr = decode_page(fh.read(PAGE_SIZE), expect_page=0, header_page=True)
            file_id = hdr.file_id
            json.loads(hdr.raw)
        except (PageCorrupt, ValueError) as exc:
            result["bad_pages"].append({"page": 0, "reason": f"file header: {exc}"})
        result["pages_examined"] = 1 if size >= PAGE_SIZE else 0
        for p in range(1, size // PAGE_SIZE):
            data = fh.read(PAGE_SIZE)
            result["pages_examined"] += 1
            try:
                page = decode_page(data, expect_page=p, expect_file=file_id)
                result["rows"] += len(page.rows)
            except PageCorrupt as exc:
                result["bad_pages"].append({"page": p, "reason": str(exc)})
    if result["bad_pages"]:
        result["status"] = "corrupt"
    return result


def verify_paths(paths: Iterable[str | os.PathLike[str]]) -> list[dict]:
    """Verify files; a directory means every ``*.dbf`` in it."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(verify_file(f) for f in sorted(p.glob("*.dbf")))
        else:
            out.append(verify_file(p))
    return out


def dump_rows(home: str | os.PathLike[str], files: Iterable[str] | None = None) -> tuple[list[tuple[str, str, str]], list[str]]:
    """All rows as sorted (file, key, value) read straight from the datafiles (read-only, no lock).

    Returns (rows, errors) where errors name the corrupt pages that were skipped.
    """
    home = Path(home)
    control = json.loads((home / "control.json").read_text())
    wanted = set(files) if files is not None else None
    rows: list[tuple[str, str, str]] = []
    errors: list[str] = []
    for fid, meta in sorted(control["files"].items(), key=lambda kv: int(kv[0])):
        name = meta["name"]
        if wanted is not None and name not in wanted:
            continue
        path = home / "data" / f"{name}.dbf"
        if not path.exists():
            errors.append(f"{name}: datafile missing")
            continue
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            for p in range(1, size // PAGE_SIZE):
                data = os.pread(fh.fileno(), PAGE_SIZE, p * PAGE_SIZE)
                try:
                    page = decode_page(data, expect_page=p, expect_file=int(fid))
                except PageCorrupt as exc:
                    errors.append(f"{name}: page {p}: {exc}")
                    continue
                rows.extend((name, k.decode(), v.decode()) for k, v in page.rows)
    rows.sort()
    return rows, errors


def corrupt_pages(datafile: str | os.PathLike[str], pages: Iterable[int], *, seed: int | None = None,
                  keep_mtime: bool = True) -> None:
    """Damage the given pages like a bad disk: scribble bytes inside them, same file size.

    The mtime is kept by default (a failing disk does not touch it), so only a content
    comparison or the page checksums can find the damage.
    """
    path = Path(datafile)
    st = os.stat(path)
    rng = random.Random(seed)
    with open(path, "r+b") as fh:
        for p in pages:
            if (p + 1) * PAGE_SIZE > st.st_size:
                raise MiniDBError(f"{path} has no page {p}")
            off = p * PAGE_SIZE + HEADER.size + rng.randrange(0, PAYLOAD_SIZE - 512)
            old = os.pread(fh.fileno(), 512, off)
            new = bytes(rng.getrandbits(8) for _ in range(512))
            if new == old:
                new = bytes(b ^ 0xFF for b in old)
            os.pwrite(fh.fileno(), new, off)
        fh.flush()
        os.fsync(fh.fileno())
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
