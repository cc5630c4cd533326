"""Which changed files are corrupted on production, and which are merely newer there.

The database's own verify tool runs on both sides for every changed regular
file (exit 0 = healthy); each file gets one of ``vocabulary.CLASSES``. Also the
whole diff step in one call (``diff_hosts``: hash both sides, diff, classify).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..endpoint import Cancelled, CommandResult, Endpoint, SSHError, command_string
from ..events import Emitter, NullEmitter
from ..ssh import Session
from ..vocabulary import CLASSES, VERDICT_LABELS
from .diff import DiffEntry, DiffResult, diff_manifests
from .hashing import build_pair
from .model import DEFAULT_CHUNK, Manifest

__all__ = ["CLASSES", "VERDICT_LABELS", "CorruptedOnBoth", "Classified", "Classification", "check_verify_template", "verify_argv", "classify",
           "diff_hosts"]


class CorruptedOnBoth(Exception):
    """A changed file fails verification on the clone too: the restore did not fix it."""

    def __init__(self, message: str, classification: "Classification") -> None:
        super().__init__(message)
        self.classification = classification


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


# Programs that run their arguments as code (shells, and wrappers that start one), and interpreters
# that do so with -c/-e: a path given to them could be interpreted, not named.
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox", "env", "eval", "xargs", "sudo", "su"})
INTERPRETERS = frozenset({"python", "python3", "perl", "ruby", "node"})
PATH_WORD = "{path}"


def check_verify_template(template: str) -> list[str]:
    """Why ``template`` cannot be a verify command (empty: it can).

    ``{path}`` must be a word of its own, unquoted: the argv is built by putting the path into
    exactly that word and is then shell-quoted for the remote side, so a file named
    ``a$(id>/tmp/p).dbf`` stays one argument. Inside a shell string (``sh -c 'dbverify {path}'``),
    in quotes, or as part of a word (``--file={path}``) it would be re-read by a shell or the tool.
    """
    errors = []
    try:
        argv = shlex.split(template)
    except ValueError as exc:
        return [f"cannot be split into words: {exc}"]
    if not argv:
        return ["is empty"]
    if PATH_WORD not in argv:
        errors.append("must contain {path} as a word of its own (e.g. 'dbverify {path}')")
    if any(PATH_WORD in a and a != PATH_WORD for a in argv) or _quoted_or_glued(template):
        errors.append("{path} must stand alone, unquoted, not inside a quoted string or a longer word: the "
                      "path is passed as one argument by itself")
    words = argv[:argv.index(PATH_WORD)] if PATH_WORD in argv else argv
    names = {os.path.basename(w) for w in words}
    runner = sorted(names & SHELLS) or (sorted(names & INTERPRETERS) if {"-c", "-e"} & set(argv) else [])
    if runner:
        errors.append(f"runs {runner[0]!r}, which would interpret the path as code; name the verify tool "
                      f"itself (e.g. 'dbverify {{path}}')")
    return errors


def _quoted_or_glued(template: str) -> bool:
    """``{path}`` touching anything but whitespace or the template's ends in the raw text."""
    at = template.find(PATH_WORD)
    while at >= 0:
        before = template[at - 1] if at > 0 else " "
        end = at + len(PATH_WORD)
        after = template[end] if end < len(template) else " "
        if not (before.isspace() and after.isspace()):
            return True
        at = template.find(PATH_WORD, end)
    return False


def verify_argv(template: str, path: bytes) -> list[str]:
    """The template split like a shell would, the path put into its ``{path}`` word(s) only.

    The path never passes through a shell unquoted: the argv is re-joined with shlex quoting
    (``command_string``) before it is sent. A template ``check_verify_template`` refuses raises
    ``ValueError``.
    """
    errors = check_verify_template(template)
    if errors:
        raise ValueError(f"verify command {template!r}: " + "; ".join(errors))
    text = path.decode("utf-8", "surrogateescape")
    return [text if a == PATH_WORD else a for a in shlex.split(template)]


def _verify_one(session: Session | None, argv: list[str], timeout: float,
                cancelled: Callable[[], bool] | None = None) -> dict:
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
        return session.run(argv, timeout=timeout, tail_lines=50, cancelled=cancelled).as_dict()
    except (SSHError, OSError, subprocess.TimeoutExpired, Cancelled) as exc:
        return {"command": command_string(argv), "exit_code": None, "error": str(exc)}


def classify(diff: DiffResult, verify_template: str | None, clone_endpoint: Endpoint | None,
             prod_endpoint: Endpoint | None, emitter: Emitter | None = None, *, timeout: float = 600,
             strict: bool = True, cancelled: Callable[[], bool] | None = None) -> Classification:
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
                    if cancelled is not None and cancelled():
                        raise Cancelled(f"verify cancelled after {i} of {len(targets)} file(s)")
                    fc = pool.submit(_verify_one, sc, verify_argv(verify_template, e.clone_path), timeout, cancelled)
                    fp = pool.submit(_verify_one, sp, verify_argv(verify_template, e.prod_path), timeout, cancelled)
                    rc, rp = fc.result(), fp.result()
                    if cancelled is not None and cancelled():
                        raise Cancelled(f"verify cancelled at file {i + 1} of {len(targets)}; the verify "
                                        f"commands were stopped on both hosts")
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
