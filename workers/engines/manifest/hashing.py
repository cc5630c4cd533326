"""Running the hashing agent: on this machine, over SSH, or both sides of a diff at once.

The agent (``agent/hashagent.py``) is started through the one agent bootstrap
(``workers.engines.agent``) as a ``remote.RemoteProcess``: script on stdin,
nothing is left on the host. Both sides of a diff MUST hash alike, so the
algorithm is negotiated first — inside the agent run itself when both hosts
have python3 (``--negotiate``), else by a probe, falling back to whole-file
mode with the shell fallback (``shell``) where python3 is missing.
"""
from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..agent import NO_PYTHON_EXIT, agent_argv, agent_command, agent_payload, hashagent
from ..endpoint import Cancelled, CommandTimeout, Endpoint, command_string
from ..events import Emitter, NullEmitter
from ..remote import MAX_RECORD, CancelWatch, LineSplitter, RemoteProcess
from ..ssh import Session
from .model import DEFAULT_CHUNK, Entry, Local, Manifest, ManifestError
from .shell import SHELL_AGENT, SHELL_TOOL_BINARIES, SHELL_TOOLS, parse_shell_output

# best first; chunked mode needs python3 on every side, whole mode works with the shell fallback
PREFERENCE = ["xxh3_128", "blake3", "sha256", "blake2b"]
NEGOTIATE_TIMEOUT = 60.0


# ---------------------------------------------------------------------------- the agent's output
class _AgentOutput:
    """Incrementally parses the agent's stdout into a Manifest."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.manifest: Manifest | None = None
        self.records = 0  # lines seen before the trailer (header included)
        # One record carries every chunk digest of a file: a big file's line is long (~35 bytes per
        # MiB hashed), but bounded: a host that sends more is not running our agent.
        self.lines = LineSplitter(self._line, max_line=MAX_RECORD, split=False)
        self.feed = self.lines.feed

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
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
        self.lines.flush()
        last = stderr_tail[-1] if stderr_tail else ""
        if exit_code != 0 or self.manifest is None or not self.manifest.complete:
            raise ManifestError(f"{self.host}: hashing agent failed (exit {exit_code}"
                                f"{', output truncated' if self.manifest and not self.manifest.complete else ''})"
                                + (f": {last}" if last else ""))
        return self.manifest


class _AgentStderr:
    """Agent stderr lines: ``P done total files_done files_total`` is progress, anything else is logged."""

    def __init__(self, emitter: Emitter, label: str) -> None:
        self.emitter, self.label = emitter, label
        self.tail: list[str] = []

    def __call__(self, line: str) -> None:
        parts = line.split()
        if len(parts) == 5 and parts[0] == "P" and all(p.isdigit() for p in parts[1:]):
            done, total, files_done, files_total = (int(p) for p in parts[1:])
            self.emitter.progress(done, total, "bytes", side=self.label, files=files_done, files_total=files_total)
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


def _collect(proc: RemoteProcess, parser: _AgentOutput, err: _AgentStderr, start: float,
             timeout: float | None, label: str) -> Manifest:
    """Read an agent's stdout to the end into the parser; the manifest, or ManifestError."""
    try:
        proc.drain(parser.feed, deadline=None if timeout is None else start + timeout)
    except CommandTimeout:
        proc.close()
        raise ManifestError(f"{label}: hashing timed out after {timeout}s") from None
    return parser.finish(proc.wait(), err.tail)


# ---------------------------------------------------------------------------- what a host can hash with
@dataclass
class Probe:
    python: bool
    algos: list[str]               # chunked-capable (python) algorithms, best first
    whole_algos: list[str]         # algorithms usable in whole-file mode
    detail: dict = field(default_factory=dict)


def _probe_script() -> str:
    """python3: the agent's probe line; no python3: NOPYTHON and the hash tools on PATH."""
    return (f"if command -v python3 >/dev/null 2>&1; then exec {command_string(agent_argv('hashagent', ['--probe']))}; "
            f"fi; cat >/dev/null; echo NOPYTHON; "
            f"for t in xxhsum b3sum sha256sum; do command -v $t >/dev/null 2>&1 && echo $t; done; exit 0")


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
        return _parse_probe(json.dumps(hashagent.probe()).encode())
    argv, payload = ["sh", "-c", _probe_script()], agent_payload("hashagent")
    if session is not None:
        return _parse_probe(session.check_output(argv, stdin=payload, timeout=60))
    with Session.connect(endpoint) as s:
        return _parse_probe(s.check_output(argv, stdin=payload, timeout=60))


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


# ---------------------------------------------------------------------------- one side
def _roots_bytes(roots: Sequence[str | bytes]) -> list[bytes]:
    if not roots:
        raise ValueError("no roots given")
    return [os.fsencode(r) for r in roots]


def _utf8_roots(rb: Sequence[bytes]) -> list[str]:
    out = [r.decode("utf-8", "surrogateescape") for r in rb]
    for r in out:
        try:
            r.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"root {r!r} is not valid UTF-8; SSH commands are UTF-8 text") from exc
    return out


def _send(proc: RemoteProcess, data: bytes, *, close: bool) -> None:
    """Write ``data`` to the process's stdin (then EOF when ``close``)."""
    try:
        proc.write(data)
    except OSError:
        pass  # the process exited early (no python3, a broken script): its exit code tells
    if close:
        proc.close_stdin()


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
        chunks: list[bytes] = []
        proc = RemoteProcess.local([*preexec_argv, "sh", "-s", "--", SHELL_TOOLS[algo], *map(os.fsdecode, rb)],
                                   on_stderr_line=lambda line: emitter.log(line, "stderr"))
        with proc:
            _send(proc, SHELL_AGENT.encode(), close=True)
            proc.drain(chunks.append)
            code = proc.wait()
        if code != 0:
            raise ManifestError(f"{label}: shell fallback failed (exit {code})")
        return parse_shell_output(b"".join(chunks), rb, algo, label)
    args = _agent_args(algo, mode, chunk_size, quick, threads)
    err = _AgentStderr(emitter, label)
    proc = RemoteProcess.local([*preexec_argv, *agent_argv("hashagent", [*args, "--", *map(os.fsdecode, rb)],
                                                           python=python or sys.executable)], on_stderr_line=err)
    with proc:
        _send(proc, agent_payload("hashagent"), close=True)
        return _collect(proc, _AgentOutput(label), err, time.monotonic(), None, label)


class _NegotiatingAgent:
    """An agent started with ``--negotiate`` on an open session: it reports what it can hash,
    waits for ``choose()``, then hashes — one python3 start and no extra round trip."""

    def __init__(self, session: Session, roots: Sequence[str | bytes], *, chunk_size: int, quick: bool,
                 threads: int, label: str, emitter: Emitter, timeout: float | None = None) -> None:
        self.label, self.timeout = label, timeout
        self.start = time.monotonic()
        args = ["--negotiate", "--chunk-size", str(chunk_size)] + (["--quick"] if quick else []) \
            + (["--threads", str(threads)] if threads else [])
        self.err = _AgentStderr(emitter, label)
        self.parser = _AgentOutput(label)
        self.proc = session.start(agent_command("hashagent", [*args, "--", *_utf8_roots(_roots_bytes(roots))]),
                                  on_stderr_line=self.err)
        _send(self.proc, agent_payload("hashagent"), close=False)
        self.probe = self._read_probe()

    def _read_probe(self) -> Probe | None:
        buf = b""
        try:
            while b"\n" not in buf:
                data = self.proc.read(65536, deadline=self.start + NEGOTIATE_TIMEOUT)
                if not data:
                    code = self.proc.wait()
                    if code == NO_PYTHON_EXIT:
                        return None  # no python3 on this host
                    raise ManifestError(f"{self.label}: hashing agent exited {code} before negotiating")
                buf += data
        except CommandTimeout:
            self.proc.close()
            raise ManifestError(f"{self.label}: no answer from the hashing agent within "
                                f"{NEGOTIATE_TIMEOUT:.0f} s") from None
        line, rest = buf.split(b"\n", 1)
        self.parser.feed(rest)
        return _parse_probe(line)

    def choose(self, algo: Algorithm) -> None:
        self.proc.write(json.dumps({"algo": algo.name, "mode": algo.mode}).encode() + b"\n")
        self.proc.close_stdin()

    def abort(self, reason: str) -> None:
        try:
            self.proc.write(json.dumps({"abort": reason}).encode() + b"\n")
        except OSError:
            pass
        finally:
            self.proc.close()

    def finish(self) -> Manifest:
        with self.proc:
            return _collect(self.proc, self.parser, self.err, self.start, self.timeout, self.label)


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
    start = time.monotonic()
    own = session is None
    if session is None:
        session = Session.connect(endpoint)
    try:
        if runner != "shell":
            err = _AgentStderr(emitter, label)
            parser = _AgentOutput(label)
            proc = session.start(agent_command("hashagent", [*_agent_args(algo, mode, chunk_size, quick, threads),
                                                             "--", *root_args]), on_stderr_line=err)
            with proc:
                _send(proc, agent_payload("hashagent"), close=True)
                try:
                    return _collect(proc, parser, err, start, timeout, label)
                except ManifestError:
                    if proc.exit_code != NO_PYTHON_EXIT or parser.manifest is not None:
                        raise
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


# ---------------------------------------------------------------------------- both sides at once
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


def _gather(futures: Sequence[Any], on_failure: Callable[[list[Any]], None]) -> list[Any]:
    """Results of ``futures`` (None stays None); if any failed, ``on_failure(results)`` cleans up
    the ones that did not, then the first failure is raised."""
    results: list[Any] = []
    failure: BaseException | None = None
    for f in futures:
        try:
            results.append(f.result() if f is not None else None)
        except BaseException as exc:  # keep collecting: the other side must be cleaned up too
            results.append(None)
            failure = failure or exc
    if failure is not None:
        on_failure(results)
        raise failure
    return results


def build_pair(clone: Endpoint | None, prod: Endpoint | None, clone_roots: Sequence[str | bytes],
               prod_roots: Sequence[str | bytes] | None = None, *, algo: Algorithm | None = None,
               chunk_size: int = DEFAULT_CHUNK, quick: bool = False, emitter: Emitter | None = None,
               threads: int = 0, cancelled: Callable[[], bool] | None = None, **kw: Any) -> tuple[Manifest, Manifest]:
    """Hash clone and production at the same time (two threads, two SSH sessions).

    ``cancelled``: polled while the agents hash; once it says yes both are stopped on their hosts
    and ``Cancelled`` is raised.

    One SSH session per remote side (a connection costs ~0.1 s here). With
    ``algo=None`` negotiation happens inside the agent run (``--negotiate``): each
    remote agent reports its algorithms, the best common one is sent back, and the
    same process hashes — no second python3 start. Hosts without python3 fall back
    to ``negotiate_algorithm`` and whole-file mode.
    """
    emitter = emitter or NullEmitter()
    side = _SideEmitter(emitter)
    watch = CancelWatch(cancelled)
    try:
        with watch:
            return _build_pair(clone, prod, clone_roots, prod_roots, algo, chunk_size, quick, emitter, side, threads,
                               watch, kw)
    except Exception as exc:
        if watch.fired.is_set():
            raise Cancelled("the diff was cancelled; both hash agents were stopped on their hosts") from exc
        raise


def _build_pair(clone: Endpoint | None, prod: Endpoint | None, clone_roots: Sequence[str | bytes],
                prod_roots: Sequence[str | bytes] | None, algo: Algorithm | None, chunk_size: int, quick: bool,
                emitter: Emitter, side: "_SideEmitter", threads: int, watch: CancelWatch,
                kw: dict) -> tuple[Manifest, Manifest]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        sessions: list[Session | None] = _gather(
            [pool.submit(Session.connect, ep) if ep is not None else None for ep in (clone, prod)],
            lambda opened: [s.close() for s in opened if s is not None])
        for s in sessions:
            if s is not None:
                s.watch = watch
        try:
            eps, roots_of = (clone, prod), (clone_roots, prod_roots or clone_roots)
            labels, sides = ("clone", "production"), (side.for_side("clone"), side.for_side("production"))
            agents: list[_NegotiatingAgent | None] = [None, None]
            if algo is None:
                emitter.phase("negotiate")
                agents = _gather(
                    [pool.submit(_NegotiatingAgent, sessions[i], roots_of[i], chunk_size=chunk_size, quick=quick,
                                 threads=threads, label=labels[i], emitter=sides[i], timeout=kw.get("timeout"))
                     if sessions[i] is not None else None for i in range(2)],
                    lambda started: [a.abort("the other side failed") for a in started if a is not None])
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
            hashed = []
            for i in range(2):
                agent = agents[i]
                if agent is not None:
                    hashed.append(pool.submit(agent.finish))
                else:
                    hashed.append(pool.submit(build_manifest, eps[i], roots_of[i], emitter=sides[i],
                                              label=labels[i], session=sessions[i], **common))
            pair = hashed[0].result(), hashed[1].result()
            if watch.fired.is_set():
                raise Cancelled("the diff was cancelled; both hash agents were stopped on their hosts")
            return pair
        finally:
            for s in sessions:
                if s is not None:
                    s.close()
