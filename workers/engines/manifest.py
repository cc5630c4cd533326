"""Manifests of file trees on hosts, and the clone-vs-production diff.

A ``Manifest`` is what the hashing agent (``agent/hashagent.py``) reports for a
set of roots on one host: every entry's type and metadata and, for regular
files, a file digest plus per-chunk digests. The diff step hashes the clone and
production *at the same time* (two SSH sessions, two threads), compares them,
and optionally asks the database's own verify tool which changed files are
corrupted on production (the repair) and which are merely newer there.

Paths are bytes everywhere (Linux file names are bytes, and a non-UTF-8 name
must neither crash the diff nor be misreported as equal). On disk a manifest is
gzip'd JSON lines in the agent's own format, so the sync-back step can reuse
the chunk digests.

No Django or Celery here: engines report through an ``Emitter``.
"""
from __future__ import annotations

import base64
import gzip
import json
import os
import select
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .agent import agent_source
from .events import Emitter, NullEmitter
from .ssh import CommandResult, Endpoint, Session, SSHError, command_string, pump

DEFAULT_CHUNK = 1 << 20
# best first; chunked mode needs python3 on every side, whole mode works with the shell fallback
PREFERENCE = ["xxh3_128", "blake3", "sha256", "blake2b"]
# shell fallback: the tool that prints the same digest as the agent's whole-file mode
SHELL_TOOLS = {"xxh3_128": "xxhsum -H2", "blake3": "b3sum", "sha256": "sha256sum"}
SHELL_TOOL_BINARIES = {"xxh3_128": "xxhsum", "blake3": "b3sum", "sha256": "sha256sum"}

Local = None  # an "endpoint" of None means: this machine, via subprocess


class ManifestError(Exception):
    """The agent failed, its output was truncated, or two manifests cannot be compared."""


class CorruptedOnBoth(Exception):
    """A changed file fails verification on the clone too: the restore did not fix it."""

    def __init__(self, message: str, classification: "Classification") -> None:
        super().__init__(message)
        self.classification = classification


# ---------------------------------------------------------------------------- paths
def _path_from_json(rec: dict, key: str) -> bytes | None:
    if key in rec:
        return rec[key].encode("utf-8")
    if key + "b" in rec:
        return base64.b64decode(rec[key + "b"])
    return None


def _path_to_json(rec: dict, key: str, raw: bytes) -> None:
    try:
        rec[key] = raw.decode("utf-8")
    except UnicodeDecodeError:
        rec[key + "b"] = base64.b64encode(raw).decode("ascii")


def show_path(raw: bytes) -> str:
    """Printable form of a path: undecodable bytes as \\xNN, control characters escaped."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in text)


def join_path(root: bytes, rel: bytes) -> bytes:
    if not rel:
        return root
    return root.rstrip(b"/") + b"/" + rel if root != b"/" else b"/" + rel


# ---------------------------------------------------------------------------- manifest
@dataclass
class Entry:
    root: int                      # index into Manifest.roots
    rel: bytes                     # path relative to its root (b"" = the root itself)
    type: str                      # f d l c b p s ?
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    nlink: int = 1
    ino: str = ""                  # "dev:ino" (hard-link identity on that host)
    alloc: int | None = None       # allocated bytes (st_blocks*512): < size means sparse
    digest: str | None = None
    chunks: list[str] | None = None
    target: bytes | None = None    # symlink target
    rdev: str | None = None        # "major:minor" for devices
    unstable: bool = False         # content changed while it was being read
    error: str | None = None

    @property
    def sparse(self) -> bool:
        return self.type == "f" and self.alloc is not None and self.alloc < self.size

    @classmethod
    def from_json(cls, rec: dict) -> "Entry":
        return cls(
            root=rec.get("r", 0), rel=_path_from_json(rec, "p") or b"", type=rec.get("t", "?"),
            size=rec.get("size", 0), mode=rec.get("mode", 0), uid=rec.get("uid", 0), gid=rec.get("gid", 0),
            mtime_ns=rec.get("mtime_ns", 0), nlink=rec.get("nlink", 1), ino=rec.get("ino", ""),
            alloc=rec.get("alloc"), digest=rec.get("h"), chunks=rec.get("c"),
            target=_path_from_json(rec, "target"), rdev=rec.get("rdev"),
            unstable=bool(rec.get("unstable")), error=rec.get("err"))

    def to_json(self) -> dict:
        rec: dict[str, Any] = {"r": self.root}
        _path_to_json(rec, "p", self.rel)
        rec.update({"t": self.type, "size": self.size, "mode": self.mode, "uid": self.uid, "gid": self.gid,
                    "mtime_ns": self.mtime_ns, "nlink": self.nlink, "ino": self.ino})
        for key, value in (("alloc", self.alloc), ("h", self.digest), ("c", self.chunks),
                           ("rdev", self.rdev), ("err", self.error)):
            if value is not None:
                rec[key] = value
        if self.target is not None:
            _path_to_json(rec, "target", self.target)
        if self.unstable:
            rec["unstable"] = True
        return rec


@dataclass
class Manifest:
    roots: list[bytes]
    algo: str
    mode: str = "chunked"          # "chunked" (per-chunk digests) | "whole" (file digest only)
    chunk_size: int = DEFAULT_CHUNK
    quick: bool = False            # metadata only, no content digests
    host: str = ""
    started_ns: int = 0            # host clock when the walk began
    mtime_resolution_ns: int = 1   # the shell fallback only sees whole seconds
    complete: bool = False         # the agent's trailer arrived
    stats: dict = field(default_factory=dict)
    entries: dict[bytes, Entry] = field(default_factory=dict)   # keyed by full path bytes

    def add(self, entry: Entry) -> None:
        self.entries[self.path_of(entry)] = entry

    def path_of(self, entry: Entry) -> bytes:
        return join_path(self.roots[entry.root], entry.rel)

    def by_rel(self) -> dict[tuple[int, bytes], Entry]:
        """Entries keyed by (root index, relative path): how two hosts' trees line up."""
        return {(e.root, e.rel): e for e in self.entries.values()}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, path: bytes | str) -> Entry | None:
        return self.entries.get(os.fsencode(path))

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries.values() if e.type == "f")

    def header(self) -> dict:
        return {"agent": "understudy-manifest", "v": 1, "algo": self.algo, "mode": self.mode,
                "chunk": self.chunk_size, "quick": self.quick, "host": self.host,
                "started_ns": self.started_ns, "mtime_resolution_ns": self.mtime_resolution_ns,
                "complete": self.complete, "stats": self.stats,
                "rootsb": [base64.b64encode(r).decode("ascii") for r in self.roots]}

    def save(self, path: str | os.PathLike) -> Path:
        """gzip'd JSON lines: header, then one line per entry (the agent's format)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with gzip.open(tmp, "wb", compresslevel=6) as fh:
            fh.write(json.dumps(self.header(), separators=(",", ":")).encode() + b"\n")
            for entry in self.entries.values():
                fh.write(json.dumps(entry.to_json(), separators=(",", ":")).encode() + b"\n")
        os.replace(tmp, path)  # a half-written manifest must never be loaded as a whole one
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        with gzip.open(path, "rb") as fh:
            lines = iter(fh)
            try:
                head = json.loads(next(lines))
            except StopIteration as exc:
                raise ManifestError(f"{path}: empty manifest file") from exc
            if head.get("agent") != "understudy-manifest":
                raise ManifestError(f"{path}: not an understudy manifest")
            m = cls(roots=[base64.b64decode(r) for r in head["rootsb"]], algo=head["algo"], mode=head["mode"],
                    chunk_size=head["chunk"], quick=head["quick"], host=head.get("host", ""),
                    started_ns=head.get("started_ns", 0),
                    mtime_resolution_ns=head.get("mtime_resolution_ns", 1),
                    complete=head.get("complete", False), stats=head.get("stats", {}))
            for line in lines:
                m.add(Entry.from_json(json.loads(line)))
        return m


class _AgentOutput:
    """Incrementally parses the agent's stdout into a Manifest."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.manifest: Manifest | None = None
        self.buf = b""
        self.records = 0  # lines seen before the trailer (header included)

    def feed(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if line:
                self._line(line)

    def _line(self, line: bytes) -> None:
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise ManifestError(f"{self.host}: agent printed a line that is not JSON: {line[:200]!r}") from exc
        if not rec.get("end"):
            self.records += 1
        if "agent" in rec:
            self.manifest = Manifest(roots=[base64.b64decode(r) for r in rec["rootsb"]], algo=rec["algo"],
                                     mode=rec["mode"], chunk_size=rec["chunk"], quick=rec["quick"],
                                     host=self.host, started_ns=rec.get("started_ns", 0))
        elif self.manifest is None:
            raise ManifestError(f"{self.host}: agent output did not start with a header")
        elif rec.get("end"):
            if "records" in rec and rec["records"] != self.records:
                raise ManifestError(f"{self.host}: agent wrote {rec['records']} records but "
                                    f"{self.records} arrived")
            self.manifest.complete = True
            self.manifest.stats = {k: v for k, v in rec.items() if k != "end"}
        else:
            self.manifest.add(Entry.from_json(rec))

    def finish(self, exit_code: int | None, stderr_tail: Sequence[str]) -> Manifest:
        if self.buf.strip():
            self._line(self.buf)
        last = stderr_tail[-1] if stderr_tail else ""
        if exit_code != 0 or self.manifest is None or not self.manifest.complete:
            raise ManifestError(f"{self.host}: hashing agent failed (exit {exit_code}"
                                f"{', output truncated' if self.manifest and not self.manifest.complete else ''})"
                                + (f": {last}" if last else ""))
        return self.manifest


class _StderrReader:
    """Agent stderr: ``P done total files_done files_total`` progress lines, anything else is logged."""

    def __init__(self, on_progress: Callable[[int, int, int, int], None], emitter: Emitter) -> None:
        self.on_progress, self.emitter = on_progress, emitter
        self.buf = b""
        self.tail: list[str] = []

    def feed(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            parts = line.split()
            if len(parts) == 5 and parts[0] == "P" and all(p.isdigit() for p in parts[1:]):
                self.on_progress(*(int(p) for p in parts[1:]))
            elif line:
                self.tail = (self.tail + [line])[-20:]
                self.emitter.log(line, "stderr")


def _agent_args(algo: str, mode: str, chunk_size: int, quick: bool, threads: int) -> list[str]:
    args = ["--algo", algo, "--chunk-size", str(chunk_size)]
    if mode == "whole":
        args.append("--whole")
    if quick:
        args.append("--quick")
    if threads:
        args += ["--threads", str(threads)]
    return args


# ---------------------------------------------------------------------------- shell fallback
# Sent as `sh -s -- TOOL ROOT...` to hosts without python3. One stat and one hash
# process per file: slow but correct. Per entry it prints `path\0` then
# `S <mode hex> size uid gid mtime_s nlink dev ino major_hex minor_hex\n`, then for
# a symlink `target\0`, for a regular file `H digest\n` or `E reason\n`.
# find -exec ... {} + hands names over as argv: any byte except NUL survives.
SHELL_AGENT = r'''
H="$1"; shift
INNER='
H=$1; shift
for f; do
  s=$(stat -c "%f %s %u %g %Y %h %d %i %t %T" "$f" 2>/dev/null) || { printf "%s\0E stat failed\n" "$f"; continue; }
  printf "%s\0S %s\n" "$f" "$s"
  if [ -L "$f" ]; then
    printf "%s\0" "$(readlink "$f")"
  elif [ -f "$f" ]; then
    if d=$($H < "$f" 2>/dev/null); then printf "H %s\n" "${d%% *}"; else echo "E unreadable"; fi
  fi
done'
for r; do
  find "$r" -xdev -exec sh -c "$INNER" sh "$H" {} + || echo "FINDFAILED $r" >&2
done
printf "\0END\n"
'''

_S_TYPES = {0o100000: "f", 0o040000: "d", 0o120000: "l", 0o020000: "c", 0o060000: "b",
            0o010000: "p", 0o140000: "s"}


def parse_shell_output(data: bytes, roots: Sequence[bytes], algo: str, host: str) -> Manifest:
    m = Manifest(roots=list(roots), algo=algo, mode="whole", chunk_size=0, host=host,
                 started_ns=time.time_ns(), mtime_resolution_ns=1_000_000_000)
    pos = 0
    stripped = [r.rstrip(b"/") or b"/" for r in roots]

    def read_until(sep: bytes) -> bytes:
        nonlocal pos
        end = data.index(sep, pos)
        out, pos = data[pos:end], end + len(sep)
        return out

    files = total = errors = 0
    try:
        while pos < len(data):
            path = read_until(b"\0")
            line = read_until(b"\n")
            if path == b"" and line == b"END":
                m.complete = True
                break
            # longest matching root wins (roots may nest)
            ri, rel = 0, path
            for i, r in sorted(enumerate(stripped), key=lambda x: -len(x[1])):
                if path == r or path.startswith(r.rstrip(b"/") + b"/"):
                    ri, rel = i, path[len(r):].lstrip(b"/") if path != r else b""
                    break
            if line.startswith(b"E "):
                m.add(Entry(root=ri, rel=rel, type="?", error=line[2:].decode()))
                errors += 1
                continue
            f = line.decode().split()
            raw_mode = int(f[1], 16)
            e = Entry(root=ri, rel=rel, type=_S_TYPES.get(raw_mode & 0o170000, "?"), size=int(f[2]),
                      mode=raw_mode & 0o7777, uid=int(f[3]), gid=int(f[4]), mtime_ns=int(f[5]) * 1_000_000_000,
                      nlink=int(f[6]), ino=f"{f[7]}:{f[8]}")
            if e.type in ("c", "b"):
                e.rdev = f"{int(f[9], 16)}:{int(f[10], 16)}"
            if e.type == "l":
                e.target = read_until(b"\0")
            elif e.type == "f":
                files += 1
                total += e.size
                res = read_until(b"\n")
                if res.startswith(b"H "):
                    e.digest = res[2:].decode().strip()
                else:
                    e.error = res[2:].decode() or "unreadable"
                    errors += 1
            m.add(e)
    except (ValueError, IndexError) as exc:
        raise ManifestError(f"{host}: cannot parse shell fallback output at byte {pos}: {exc}") from exc
    if not m.complete:
        raise ManifestError(f"{host}: shell fallback output was truncated")
    m.stats = {"entries": len(m.entries), "files": files, "bytes": total, "errors": errors}
    return m


# ---------------------------------------------------------------------------- running the agent
@dataclass
class Probe:
    python: bool
    algos: list[str]               # chunked-capable (python) algorithms, best first
    whole_algos: list[str]         # algorithms usable in whole-file mode
    detail: dict = field(default_factory=dict)


_PROBE_SH = ('if command -v python3 >/dev/null 2>&1; then exec python3 - --probe; fi; cat >/dev/null; '
             'echo NOPYTHON; for t in xxhsum b3sum sha256sum; do command -v $t >/dev/null 2>&1 && echo $t; done; '
             'exit 0')


def _parse_probe(out: bytes) -> Probe:
    text = out.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        d = json.loads(text.splitlines()[0])
        algos = [a for a in PREFERENCE if a in d["algos"]]
        return Probe(True, algos, [a for a in algos if a in SHELL_TOOLS], d)
    tools = set(text.split()[1:])
    whole = [a for a in PREFERENCE if SHELL_TOOL_BINARIES.get(a) in tools]
    return Probe(False, [], whole, {"tools": sorted(tools)})


def probe_host(endpoint: Endpoint | None, *, session: Session | None = None) -> Probe:
    """What the host can hash with: python3 agent algorithms or shell tools.

    This machine (``None``) is probed in-process: the local agent runs with this
    interpreter, and a subprocess would cost ~0.1-0.3 s of the diff's wall time.
    """
    if endpoint is Local:
        from .agent import hashagent
        return _parse_probe(json.dumps(hashagent.probe()).encode())
    if session is not None:
        return _parse_probe(session.check_output(["sh", "-c", _PROBE_SH], stdin=agent_source(), timeout=60))
    with Session.connect(endpoint) as s:
        return _parse_probe(s.check_output(["sh", "-c", _PROBE_SH], stdin=agent_source(), timeout=60))


@dataclass(frozen=True)
class Algorithm:
    name: str
    mode: str                      # "chunked" | "whole"


def negotiate_algorithm(endpoints: Sequence[Endpoint | None],
                        sessions: Sequence[Session | None] | None = None) -> Algorithm:
    """The best algorithm every host supports. Both sides of a diff MUST hash alike.

    ``None`` stands for this machine. Chunked mode (per-chunk digests, needed for
    a delta sync-back) if every host has python3, else whole-file mode with the
    shell fallback where needed. ``sessions`` (parallel to ``endpoints``) reuses
    open connections.
    """
    sess = list(sessions) if sessions is not None else [None] * len(endpoints)
    with ThreadPoolExecutor(max_workers=max(1, len(endpoints))) as pool:
        probes = list(pool.map(lambda pair: probe_host(pair[0], session=pair[1]), zip(endpoints, sess)))
    return _choose(list(endpoints), probes)


def _choose(endpoints: Sequence[Endpoint | None], probes: Sequence[Probe]) -> Algorithm:
    if all(p.python for p in probes):
        common = [a for a in PREFERENCE if all(a in p.algos for p in probes)]
        if common:
            return Algorithm(common[0], "chunked")
    common = [a for a in PREFERENCE if all(a in p.whole_algos for p in probes)]
    if not common:
        raise ManifestError("no hash algorithm is available on every host: "
                            + "; ".join(f"{ep or 'local'}: {p.algos or p.whole_algos}"
                                        for ep, p in zip(endpoints, probes)))
    return Algorithm(common[0], "whole")


class _Progress:
    def __init__(self, emitter: Emitter, label: str) -> None:
        self.emitter, self.label = emitter, label

    def __call__(self, done: int, total: int, files_done: int, files_total: int) -> None:
        self.emitter.progress(done, total, "bytes", side=self.label, files=files_done, files_total=files_total)


def _roots_bytes(roots: Sequence[str | bytes]) -> list[bytes]:
    if not roots:
        raise ValueError("no roots given")
    return [os.fsencode(r) for r in roots]


def build_local_manifest(roots: Sequence[str | bytes], *, algo: str, chunk_size: int = DEFAULT_CHUNK,
                         emitter: Emitter | None = None, mode: str = "chunked", quick: bool = False,
                         threads: int = 0, python: str | None = None, shell: bool = False,
                         label: str = "local", preexec_argv: Sequence[str] = ()) -> Manifest:
    """Run the agent (or, with ``shell=True``, the shell fallback) on this machine.

    ``preexec_argv`` prefixes the command (e.g. ``setpriv --reuid=...`` to hash as another user).
    """
    emitter = emitter or NullEmitter()
    rb = _roots_bytes(roots)
    if shell:
        if mode != "whole" or algo not in SHELL_TOOLS:
            raise ValueError(f"the shell fallback hashes whole files only, with {sorted(SHELL_TOOLS)}")
        proc = subprocess.run([*preexec_argv, "sh", "-s", "--", SHELL_TOOLS[algo], *rb],
                              input=SHELL_AGENT.encode(), capture_output=True)
        for line in proc.stderr.decode("utf-8", "replace").splitlines():
            emitter.log(line, "stderr")
        if proc.returncode != 0:
            raise ManifestError(f"{label}: shell fallback failed (exit {proc.returncode})")
        return parse_shell_output(proc.stdout, rb, algo, label)
    argv = [*preexec_argv, python or sys.executable, "-", *_agent_args(algo, mode, chunk_size, quick, threads),
            "--", *rb]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(agent_source())
    proc.stdin.close()
    parser = _AgentOutput(label)
    err = _StderrReader(_Progress(emitter, label), emitter)
    streams = {proc.stdout.fileno(): parser.feed, proc.stderr.fileno(): err.feed}
    while streams:
        ready, _, _ = select.select(list(streams), [], [])
        for fd in ready:
            data = os.read(fd, 1 << 20)
            if data:
                streams[fd](data)
            else:
                del streams[fd]
    return parser.finish(proc.wait(), err.tail)


def _drain(chan: Any, parser: _AgentOutput, err: _StderrReader, start: float, timeout: float | None,
           label: str) -> int:
    """Read an agent's channel to the end: stdout into the parser, stderr into progress/log."""
    if not pump(chan, parser.feed, err.feed, timeout=timeout, start=start):
        raise ManifestError(f"{label}: hashing timed out after {timeout}s")
    return chan.recv_exit_status()


# Reads exactly the agent's length from stdin and runs it, leaving stdin open for the
# negotiation answer (``python3 -`` would read stdin to EOF first).
_BOOT = ("import sys\nn = int(sys.argv[1])\nsrc = sys.stdin.buffer.read(n)\ndel sys.argv[1]\n"
         "sys.argv[0] = 'hashagent'\nexec(compile(src, 'hashagent.py', 'exec'), {'__name__': '__main__'})\n")


class _NegotiatingAgent:
    """An agent started with ``--negotiate`` on an open session: it reports what it can hash,
    waits for ``choose()``, then hashes — one python3 start and no extra round trip."""

    def __init__(self, session: Session, roots: Sequence[str | bytes], *, chunk_size: int, quick: bool,
                 threads: int, label: str, emitter: Emitter, timeout: float | None = None) -> None:
        self.label, self.emitter, self.timeout = label, emitter, timeout
        self.start = time.monotonic()
        self.root_args = _utf8_roots(_roots_bytes(roots))
        src = agent_source()
        args = ["--negotiate", "--chunk-size", str(chunk_size)] + (["--quick"] if quick else []) \
            + (["--threads", str(threads)] if threads else [])
        cmd = command_string(["python3", "-c", _BOOT, str(len(src)), *args, "--", *self.root_args])
        self.chan = session.open_stream(f"command -v python3 >/dev/null 2>&1 || exit 127; exec {cmd}")
        self.rest = b""
        try:
            self.chan.sendall(src)
        except OSError:
            pass  # exited early (no python3): the exit code tells
        self.probe = self._read_probe()

    def _read_probe(self) -> Probe | None:
        buf = b""
        while b"\n" not in buf:
            if self.chan.recv_ready():
                buf += self.chan.recv(65536)
                continue
            if self.chan.exit_status_ready() and not self.chan.recv_ready():
                code = self.chan.recv_exit_status()
                self.chan.close()
                if code == 127:
                    return None  # no python3 on this host
                raise ManifestError(f"{self.label}: hashing agent exited {code} before negotiating")
            if time.monotonic() - self.start > 60:
                self.chan.close()
                raise ManifestError(f"{self.label}: no answer from the hashing agent within 60 s")
            select.select([self.chan], [], [], 0.1)
        line, self.rest = buf.split(b"\n", 1)
        return _parse_probe(line)

    def choose(self, algo: Algorithm) -> None:
        self.chan.sendall(json.dumps({"algo": algo.name, "mode": algo.mode}).encode() + b"\n")
        self.chan.shutdown_write()

    def abort(self, reason: str) -> None:
        try:
            if not self.chan.closed:
                self.chan.sendall(json.dumps({"abort": reason}).encode() + b"\n")
        except OSError:
            pass
        finally:
            self.chan.close()

    def finish(self) -> Manifest:
        parser = _AgentOutput(self.label)
        err = _StderrReader(_Progress(self.emitter, self.label), self.emitter)
        try:
            parser.feed(self.rest)
            code = _drain(self.chan, parser, err, self.start, self.timeout, self.label)
        finally:
            self.chan.close()
        return parser.finish(code, err.tail)


def _utf8_roots(rb: Sequence[bytes]) -> list[str]:
    out = [r.decode("utf-8", "surrogateescape") for r in rb]
    for r in out:
        try:
            r.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"root {r!r} is not valid UTF-8; SSH commands are UTF-8 text") from exc
    return out


def build_remote_manifest(endpoint: Endpoint, roots: Sequence[str | bytes], *, algo: str,
                          chunk_size: int = DEFAULT_CHUNK, emitter: Emitter | None = None,
                          mode: str = "chunked", quick: bool = False, threads: int = 0,
                          timeout: float | None = None, label: str | None = None,
                          runner: str = "auto", session: Session | None = None) -> Manifest:
    """Run the agent on ``endpoint`` over SSH (script on stdin: nothing is left on the host).

    ``runner``: "auto" (python3 agent, the shell fallback in whole-file mode when the
    host has no python3), "python" or "shell" (force one).
    """
    if runner not in ("auto", "python", "shell"):
        raise ValueError(f"runner must be auto, python or shell, not {runner!r}")
    emitter = emitter or NullEmitter()
    label = label or str(endpoint)
    rb = _roots_bytes(roots)
    root_args = _utf8_roots(rb)
    agent_cmd = command_string(["python3", "-", *_agent_args(algo, mode, chunk_size, quick, threads), "--",
                                *root_args])
    # exit 127 without reading stdin when python3 is missing, so we can choose the shell fallback
    cmd = f"command -v python3 >/dev/null 2>&1 || exit 127; exec {agent_cmd}" if runner != "shell" else "exit 127"
    start = time.monotonic()
    own = session is None
    if session is None:
        session = Session.connect(endpoint)
    try:
        chan = session.open_stream(cmd)
        try:
            try:
                chan.sendall(agent_source())
                chan.shutdown_write()
            except OSError:
                pass  # the remote side exited early (no python3): the exit code tells
            parser = _AgentOutput(label)
            err = _StderrReader(_Progress(emitter, label), emitter)
            code = _drain(chan, parser, err, start, timeout, label)
        finally:
            chan.close()
        if code == 127 and not parser.manifest:
            if runner == "python":
                raise ManifestError(f"{label}: no python3 on the host")
            if mode != "whole":
                raise ManifestError(f"{label}: no python3 on the host; chunked hashing needs it "
                                    f"(negotiate_algorithm picks whole-file mode for such hosts)")
            if algo not in SHELL_TOOLS:
                raise ManifestError(f"{label}: no python3 and no shell tool for {algo}")
            emitter.log(f"{label}: no python3, using the shell fallback ({SHELL_TOOLS[algo]})", "info")
            out = session.check_output(["sh", "-s", "--", SHELL_TOOLS[algo], *root_args],
                                       stdin=SHELL_AGENT.encode(), timeout=timeout)
            return parse_shell_output(out, rb, algo, label)
        return parser.finish(code, err.tail)
    finally:
        if own:
            session.close()


def build_manifest(endpoint: Endpoint | None, roots: Sequence[str | bytes], **kw: Any) -> Manifest:
    """Local (``endpoint=None``) or remote."""
    if endpoint is Local:
        kw.pop("timeout", None)
        kw.pop("session", None)
        if kw.pop("runner", "auto") == "shell":
            kw["shell"] = True
        return build_local_manifest(roots, **kw)
    kw.pop("python", None)
    if kw.pop("shell", False):
        kw["runner"] = "shell"
    kw.pop("preexec_argv", None)
    return build_remote_manifest(endpoint, roots, **kw)


class _SideEmitter:
    """Sums the two sides' byte progress into one stream (the UI shows one bar), logs pass through."""

    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter
        self.lock = threading.Lock()
        self.sides: dict[str, tuple[int, int]] = {}
        self.last = 0.0

    def for_side(self, label: str) -> Emitter:
        outer = self

        class _One:
            def log(self, line: str, stream: str = "stdout") -> None:
                outer.emitter.log(f"[{label}] {line}", stream)

            def progress(self, done: int, total: int | None = None, unit: str = "bytes", **extra: Any) -> None:
                with outer.lock:
                    outer.sides[label] = (done, total or 0)
                    now = time.monotonic()
                    final = all(d >= t for d, t in outer.sides.values())
                    if now - outer.last < 0.25 and not final:
                        return  # coalesce: a few updates a second is plenty
                    outer.last = now
                    sides = dict(outer.sides)
                outer.emitter.progress(sum(d for d, _ in sides.values()), sum(t for _, t in sides.values()),
                                       "bytes", sides={k: {"done": d, "total": t} for k, (d, t) in sides.items()})

            def phase(self, name: str) -> None:
                outer.emitter.phase(name)

            def data(self, key: str, value: Any) -> None:
                outer.emitter.data(key, value)

        return _One()


def build_pair(clone: Endpoint | None, prod: Endpoint | None, clone_roots: Sequence[str | bytes],
               prod_roots: Sequence[str | bytes] | None = None, *, algo: Algorithm | None = None,
               chunk_size: int = DEFAULT_CHUNK, quick: bool = False, emitter: Emitter | None = None,
               threads: int = 0, **kw: Any) -> tuple[Manifest, Manifest]:
    """Hash clone and production at the same time (two threads, two SSH sessions).

    One SSH session per remote side (a connection costs ~0.1 s here). With
    ``algo=None`` negotiation happens inside the agent run (``--negotiate``): each
    remote agent reports its algorithms, the best common one is sent back, and the
    same process hashes — no second python3 start. Hosts without python3 fall back
    to ``negotiate_algorithm`` and whole-file mode.
    """
    emitter = emitter or NullEmitter()
    side = _SideEmitter(emitter)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(Session.connect, ep) if ep is not None else None for ep in (clone, prod)]
        sessions: list[Session | None] = []
        failure: BaseException | None = None
        for f in futures:
            try:
                sessions.append(f.result() if f is not None else None)
            except BaseException as exc:  # keep collecting: the other connection must be closed too
                sessions.append(None)
                failure = failure or exc
        if failure is not None:
            for s in sessions:
                if s is not None:
                    s.close()
            raise failure
        try:
            eps, roots_of = (clone, prod), (clone_roots, prod_roots or clone_roots)
            labels, sides = ("clone", "production"), (side.for_side("clone"), side.for_side("production"))
            agents: list[_NegotiatingAgent | None] = [None, None]
            if algo is None:
                emitter.phase("negotiate")
                started = [pool.submit(_NegotiatingAgent, sessions[i], roots_of[i], chunk_size=chunk_size,
                                       quick=quick, threads=threads, label=labels[i], emitter=sides[i],
                                       timeout=kw.get("timeout"))
                           if sessions[i] is not None else None for i in range(2)]
                failure = None
                for i, f in enumerate(started):
                    try:
                        agents[i] = f.result() if f is not None else None
                    except BaseException as exc:
                        failure = failure or exc
                if failure is not None:
                    for a in agents:
                        if a is not None:
                            a.abort("the other side failed")
                    raise failure
                if any(a is not None and a.probe is None for a in agents):
                    # a host without python3: whole-file mode with the shell fallback, probed the slow way
                    for a in agents:
                        if a is not None and a.probe is not None:
                            a.abort("renegotiating for a host without python3")
                    agents = [None, None]
                    algo = negotiate_algorithm(list(eps), sessions)
                else:
                    probes = [a.probe if a is not None else probe_host(None) for a in agents]
                    algo = _choose(list(eps), probes)  # type: ignore[arg-type]
                    for a in agents:
                        if a is not None:
                            a.choose(algo)
            emitter.phase("hash")
            emitter.log(f"hashing with {algo.name} ({algo.mode}"
                        f"{', quick: size+mtime only' if quick else ''})", "info")
            common = dict(algo=algo.name, mode=algo.mode, chunk_size=chunk_size, quick=quick, threads=threads,
                          **kw)
            futures2 = []
            for i in range(2):
                agent = agents[i]
                if agent is not None:
                    futures2.append(pool.submit(agent.finish))
                else:
                    futures2.append(pool.submit(build_manifest, eps[i], roots_of[i], emitter=sides[i],
                                                label=labels[i], session=sessions[i], **common))
            return futures2[0].result(), futures2[1].result()
        finally:
            for s in sessions:
                if s is not None:
                    s.close()


# ---------------------------------------------------------------------------- diff
CATEGORIES = ("changed", "missing_on_production", "extra_on_production", "type_changed", "unreadable",
              "metadata_changed")


@dataclass
class DiffEntry:
    category: str
    root: int
    rel: bytes
    clone_path: bytes
    prod_path: bytes
    type_clone: str | None
    type_prod: str | None
    size_clone: int | None
    size_prod: int | None
    reasons: list[str] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)     # indexes of differing chunks
    chunk_count: int = 0                                # chunks in the larger of the two versions
    error: str | None = None

    @property
    def display(self) -> str:
        return show_path(self.prod_path)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if not isinstance(v, bytes)}
        for key in ("rel", "clone_path", "prod_path"):
            _path_to_json(d, key, getattr(self, key))
        d["display"] = self.display
        return d


@dataclass
class DiffResult:
    algo: str
    mode: str
    quick: bool
    chunk_size: int
    entries: list[DiffEntry]
    totals: dict

    def of(self, category: str) -> list[DiffEntry]:
        return [e for e in self.entries if e.category == category]

    @property
    def changed(self) -> list[DiffEntry]:
        return self.of("changed")

    @property
    def missing_on_production(self) -> list[DiffEntry]:
        return self.of("missing_on_production")

    @property
    def extra_on_production(self) -> list[DiffEntry]:
        return self.of("extra_on_production")

    @property
    def type_changed(self) -> list[DiffEntry]:
        return self.of("type_changed")

    @property
    def unreadable(self) -> list[DiffEntry]:
        return self.of("unreadable")

    def find(self, rel: bytes | str) -> DiffEntry | None:
        rel = os.fsencode(rel)
        return next((e for e in self.entries if e.rel == rel), None)

    def to_dict(self) -> dict:
        return {"algo": self.algo, "mode": self.mode, "quick": self.quick, "chunk_size": self.chunk_size,
                "totals": self.totals, "entries": [e.to_dict() for e in self.entries]}


def _link_groups(m: Manifest) -> dict[tuple[int, bytes], frozenset[bytes]]:
    """For files with nlink > 1: the other paths (in this manifest) sharing the inode."""
    groups: dict[str, list[tuple[int, bytes]]] = {}
    for e in m.entries.values():
        if e.type == "f" and e.nlink > 1 and e.ino:
            groups.setdefault(e.ino, []).append((e.root, e.rel))
    out: dict[tuple[int, bytes], frozenset[bytes]] = {}
    for members in groups.values():
        for key in members:
            out[key] = frozenset(b"%d/" % r + rel for r, rel in members if (r, rel) != key)
    return out


def _check_comparable(a: Manifest, b: Manifest, quick: bool) -> None:
    if len(a.roots) != len(b.roots):
        raise ManifestError(f"manifests cover {len(a.roots)} vs {len(b.roots)} roots")
    for m in (a, b):
        if not m.complete:
            raise ManifestError(f"manifest of {m.host or 'a host'} is incomplete (agent output was truncated)")
    if quick:
        return
    if a.quick or b.quick:
        raise ManifestError("a quick (metadata-only) manifest cannot be compared by content; pass quick=True")
    if (a.algo, a.mode) != (b.algo, b.mode) or (a.mode == "chunked" and a.chunk_size != b.chunk_size):
        raise ManifestError(f"manifests were hashed differently ({a.algo}/{a.mode}/{a.chunk_size} vs "
                            f"{b.algo}/{b.mode}/{b.chunk_size}): negotiate one algorithm for both sides")


def _differing_chunks(a: list[str] | None, b: list[str] | None) -> list[int]:
    if a is None or b is None:
        return []
    n = max(len(a), len(b))
    return [i for i in range(n) if i >= len(a) or i >= len(b) or a[i] != b[i]]


def _data_bytes(entries: Iterable[Entry]) -> int:
    """Bytes of file data, hard links counted once (the % of data must not double count)."""
    seen: set[str] = set()
    total = 0
    for e in entries:
        if e.type != "f":
            continue
        if e.nlink > 1 and e.ino:
            if e.ino in seen:
                continue
            seen.add(e.ino)
        total += e.size
    return total


def diff_manifests(clone: Manifest, prod: Manifest, *, quick: bool = False) -> DiffResult:
    """Compare two hosts' trees. Full content comparison unless ``quick`` (size + mtime only).

    Anything that cannot be compared (unreadable, changed while being read) is
    reported, never counted as equal. Modification times are ignored in content
    mode: the restore on the clone rewrites them all.
    """
    _check_comparable(clone, prod, quick)
    a, b = clone.by_rel(), prod.by_rel()
    la, lb = _link_groups(clone), _link_groups(prod)
    entries: list[DiffEntry] = []
    chunk_size = clone.chunk_size if clone.mode == "chunked" and prod.mode == "chunked" else 0  # whole: no chunks

    for key in sorted(set(a) | set(b)):
        ea, eb = a.get(key), b.get(key)
        root, rel = key
        d = DiffEntry(category="", root=root, rel=rel,
                      clone_path=join_path(clone.roots[root], rel), prod_path=join_path(prod.roots[root], rel),
                      type_clone=ea.type if ea else None, type_prod=eb.type if eb else None,
                      size_clone=ea.size if ea else None, size_prod=eb.size if eb else None)
        if eb is None:
            d.category = "missing_on_production"
        elif ea is None:
            d.category = "extra_on_production"
        elif ea.error or eb.error:
            d.category = "unreadable"
            d.error = "; ".join(f"{side}: {e.error}" for side, e in (("clone", ea), ("production", eb)) if e.error)
        elif ea.type != eb.type:
            d.category = "type_changed"
        else:
            content: list[str] = []
            meta: list[str] = []
            if ea.type == "f":
                if ea.unstable or eb.unstable:
                    content.append("unstable")  # changed while read: never call it equal
                if ea.size != eb.size:
                    content.append("size")
                if quick:
                    res = max(clone.mtime_resolution_ns, prod.mtime_resolution_ns)
                    if ea.mtime_ns // res != eb.mtime_ns // res:
                        content.append("mtime")
                elif ea.digest is None or eb.digest is None:
                    content.append("no-digest")
                elif ea.digest != eb.digest:
                    content.append("content")
                if content and not quick:
                    d.chunks = _differing_chunks(ea.chunks, eb.chunks)
                    if chunk_size:
                        big = max(ea.size, eb.size)
                        d.chunk_count = (big + chunk_size - 1) // chunk_size
                if la.get(key, frozenset()) != lb.get(key, frozenset()):
                    meta.append("hardlinks")
            elif ea.type == "l" and ea.target != eb.target:
                content.append("target")
            elif ea.type in ("c", "b") and ea.rdev != eb.rdev:
                content.append("rdev")
            if ea.mode != eb.mode:
                meta.append("mode")
            if (ea.uid, ea.gid) != (eb.uid, eb.gid):
                meta.append("owner")
            if content:
                d.category = "changed"
                d.reasons = content + meta
            elif meta:
                d.category = "metadata_changed"
                d.reasons = meta
            else:
                continue
        entries.append(d)

    clone_bytes = _data_bytes(a.values())
    changed_files = [e for e in entries if e.category == "changed" and e.type_clone == "f"]
    changed_bytes = sum(max(e.size_clone or 0, e.size_prod or 0) for e in changed_files)
    chunk_bytes = sum(len(e.chunks) * chunk_size for e in changed_files if chunk_size)
    totals = {
        "files_clone": sum(1 for e in a.values() if e.type == "f"),
        "files_production": sum(1 for e in b.values() if e.type == "f"),
        "bytes_clone": clone_bytes,
        "bytes_production": _data_bytes(b.values()),
        "changed_files": len(changed_files),
        "changed_bytes": changed_bytes,
        "changed_chunk_bytes": chunk_bytes,
        "percent_of_data": round(100.0 * changed_bytes / clone_bytes, 3) if clone_bytes else 0.0,
        **{c: sum(1 for e in entries if e.category == c) for c in CATEGORIES},
    }
    return DiffResult(algo=clone.algo, mode=clone.mode, quick=quick, chunk_size=chunk_size,
                      entries=entries, totals=totals)


# ---------------------------------------------------------------------------- verify classification
CLASSES = ("corrupted_on_production", "newer_on_production", "corrupted_on_both", "corrupted_on_clone_only",
           "changed_unverified", "verify_error")


@dataclass
class Classified:
    entry: DiffEntry
    cls: str
    clone: dict | None = None      # evidence: the verify tool's CommandResult on the clone
    production: dict | None = None

    def to_dict(self) -> dict:
        return {"entry": self.entry.to_dict(), "class": self.cls, "clone": self.clone, "production": self.production}


@dataclass
class Classification:
    files: list[Classified]

    def of(self, cls: str) -> list[Classified]:
        return [f for f in self.files if f.cls == cls]

    @property
    def sync_back_selection(self) -> list[DiffEntry]:
        """Default selection for sync-back: corrupted on production, healthy on the clone."""
        return [f.entry for f in self.of("corrupted_on_production")]

    @property
    def ok(self) -> bool:
        return not self.of("corrupted_on_both") and not self.of("verify_error")

    def to_dict(self) -> dict:
        return {"files": [f.to_dict() for f in self.files],
                "counts": {c: len(self.of(c)) for c in CLASSES}}


def verify_argv(template: str, path: bytes) -> list[str]:
    """Split the template like a shell would, then put the path into each ``{path}``.

    The path never passes through a shell unquoted: the argv is re-joined with
    shlex quoting (``command_string``) before it is sent.
    """
    argv = shlex.split(template)
    if not argv:
        raise ValueError("verify template is empty")
    if not any("{path}" in a for a in argv):
        raise ValueError("verify template must contain {path}")
    text = path.decode("utf-8", "surrogateescape")
    return [a.replace("{path}", text) for a in argv]


def _verify_one(session: Session | None, argv: list[str], timeout: float) -> dict:
    try:
        command_string(argv).encode("utf-8")
    except UnicodeEncodeError:
        return {"command": None, "exit_code": None,
                "error": "path is not valid UTF-8: an SSH command line cannot carry it"}
    try:
        if session is None:
            start = time.monotonic()
            p = subprocess.run(argv, capture_output=True, timeout=timeout)
            return CommandResult(command_string(argv), p.returncode, time.monotonic() - start,
                                 p.stdout.decode("utf-8", "replace").splitlines()[-50:],
                                 p.stderr.decode("utf-8", "replace").splitlines()[-50:]).as_dict()
        return session.run(argv, timeout=timeout, tail_lines=50).as_dict()
    except (SSHError, OSError, subprocess.TimeoutExpired) as exc:
        return {"command": command_string(argv), "exit_code": None, "error": str(exc)}


def classify(diff: DiffResult, verify_template: str | None, clone_endpoint: Endpoint | None,
             prod_endpoint: Endpoint | None, emitter: Emitter | None = None, *, timeout: float = 600,
             strict: bool = True) -> Classification:
    """Run the verify tool on both sides for every changed regular file (exit 0 = healthy).

    ``strict``: raise ``CorruptedOnBoth`` if any file fails on the clone too — the
    restore did not repair it and syncing it back would copy corruption.
    """
    emitter = emitter or NullEmitter()
    targets = [e for e in diff.changed if e.type_clone == "f" and e.type_prod == "f"]
    if not verify_template:
        return Classification([Classified(e, "changed_unverified") for e in targets])
    for e in targets:
        verify_argv(verify_template, e.prod_path)  # validate the template before connecting
    emitter.phase("verify")
    files: list[Classified] = []
    sc = Session.connect(clone_endpoint) if clone_endpoint is not None else None
    try:
        sp = Session.connect(prod_endpoint) if prod_endpoint is not None else None
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                for i, e in enumerate(targets):
                    fc = pool.submit(_verify_one, sc, verify_argv(verify_template, e.clone_path), timeout)
                    fp = pool.submit(_verify_one, sp, verify_argv(verify_template, e.prod_path), timeout)
                    rc, rp = fc.result(), fp.result()
                    if rc.get("exit_code") is None or rp.get("exit_code") is None:
                        cls = "verify_error"
                    else:
                        ok_c, ok_p = rc["exit_code"] == 0, rp["exit_code"] == 0
                        cls = {(True, False): "corrupted_on_production", (True, True): "newer_on_production",
                               (False, False): "corrupted_on_both",
                               (False, True): "corrupted_on_clone_only"}[(ok_c, ok_p)]
                    files.append(Classified(e, cls, rc, rp))
                    emitter.log(f"{e.display}: {cls}", "stderr" if cls in ("corrupted_on_both", "verify_error")
                                else "info")
                    emitter.progress(i + 1, len(targets), "files")
        finally:
            if sp is not None:
                sp.close()
    finally:
        if sc is not None:
            sc.close()
    result = Classification(files)
    emitter.data("classification", {c: len(result.of(c)) for c in CLASSES})
    bad = result.of("corrupted_on_both")
    if bad and strict:
        names = ", ".join(f.entry.display for f in bad[:10]) + (" ..." if len(bad) > 10 else "")
        msg = (f"{len(bad)} file(s) fail verification on the clone AND production — the restore did not "
               f"repair them; do not sync back: {names}")
        emitter.log(msg, "stderr")
        raise CorruptedOnBoth(msg, result)
    return result


# ---------------------------------------------------------------------------- drift guard
@dataclass
class Drift:
    rel: bytes
    root: int
    path: bytes
    reason: str                    # content_changed | mtime_after_clone | created | deleted | type_changed | unreadable
    mtime_ns: int | None = None

    @property
    def display(self) -> str:
        return show_path(self.path)


def drift_check(reference: Manifest | float | int, current: Manifest, *,
                paths: Iterable[bytes | str] | None = None) -> list[Drift]:
    """Files whose production content/mtime changed after the clone's point in time.

    ``reference`` is either production's manifest taken at clone time (content is
    compared: catches in-place edits that keep mtime) or the clone's point in time
    as a UNIX timestamp in seconds (mtime is compared). ``paths`` (root-relative)
    limits the check to the files chosen for sync-back. Non-empty result: sync-back
    must stop and ask, never overwrite newer production data unnoticed.
    """
    want = {os.fsencode(p) for p in paths} if paths is not None else None
    cur = current.by_rel()
    out: list[Drift] = []
    if isinstance(reference, Manifest):
        quick = reference.quick or current.quick  # then size + mtime is all there is to compare
        res = max(reference.mtime_resolution_ns, current.mtime_resolution_ns)
        _check_comparable(reference, current, quick=quick)
        ref = reference.by_rel()
        for key in sorted(set(ref) | set(cur)):
            if want is not None and key[1] not in want:
                continue
            r, c = ref.get(key), cur.get(key)
            path = current.path_of(c) if c else reference.path_of(r)  # type: ignore[arg-type]
            reason = None
            if c is None:
                reason = "deleted"
            elif r is None:
                reason = "created"
            elif c.error or r.error:
                reason = "unreadable"
            elif c.type != r.type:
                reason = "type_changed"
            elif c.type == "f" and (c.size != r.size or c.unstable or (
                    c.mtime_ns // res != r.mtime_ns // res if quick else c.digest != r.digest)):
                reason = "content_changed"
            elif c.type == "l" and c.target != r.target:
                reason = "content_changed"
            if reason:
                out.append(Drift(key[1], key[0], path, reason, c.mtime_ns if c else None))
        return out
    cutoff_ns = int(float(reference) * 1_000_000_000)
    res = current.mtime_resolution_ns
    for key, c in sorted(cur.items()):
        if want is not None and key[1] not in want:
            continue
        if c.type == "d":
            continue  # a directory's mtime moves with any create/delete inside; its files are checked
        # at coarse resolution (shell fallback) a file touched in the same second counts as drifted
        if c.mtime_ns // res * res > cutoff_ns - (res if res > 1 else 0) or c.unstable:
            out.append(Drift(key[1], key[0], current.path_of(c), "mtime_after_clone", c.mtime_ns))
    if want is not None:
        for rel in want - {k[1] for k in cur}:
            out.append(Drift(rel, 0, join_path(current.roots[0], rel), "deleted"))
    return out


# ---------------------------------------------------------------------------- one call for the diff step
def diff_hosts(clone: Endpoint | None, prod: Endpoint | None, roots: Sequence[str | bytes], *,
               prod_roots: Sequence[str | bytes] | None = None, verify_template: str | None = None,
               quick: bool = False, chunk_size: int = DEFAULT_CHUNK, emitter: Emitter | None = None,
               save_dir: str | os.PathLike | None = None) -> tuple[DiffResult, Classification, Manifest, Manifest]:
    """Negotiate, hash both sides concurrently, diff, classify; optionally save both manifests."""
    emitter = emitter or NullEmitter()
    mc, mp = build_pair(clone, prod, roots, prod_roots, chunk_size=chunk_size, quick=quick, emitter=emitter)
    if save_dir is not None:
        mc.save(Path(save_dir) / "clone.manifest.gz")
        mp.save(Path(save_dir) / "production.manifest.gz")
    emitter.phase("diff")
    diff = diff_manifests(mc, mp, quick=quick)
    emitter.data("diff_totals", diff.totals)
    cls = classify(diff, verify_template, clone, prod, emitter)
    return diff, cls, mc, mp
