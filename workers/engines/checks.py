"""Acceptance checks: did the rehearsed repair leave a working service?

Four kinds, each producing a ``CheckResult`` with the evidence an auditor needs:

``command``        run on the target via SSH: exit code (+ optional regex on stdout/stderr)
``http``           status, body regex, latency — by default probed *from the target*
                   (``via: target``): a clone sits on a network with no route from
                   anywhere, so asking the host itself is the only probe that works for
                   both clone and production; ``via: local`` probes from this machine
``tcp``            a port accepts connections (from the target by default, or local)
``file_checksum``  sha256 of a file on the target equals the expected digest

Specs are plain dicts (stored in a runbook's step params) and are validated with
``validate_check_specs`` when the runbook is saved. ``endpoint=None`` runs
everything on this machine (tests, demo).
"""
from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Sequence

from .endpoint import CommandResult, Endpoint, SSHError, command_string
from .events import Emitter, NullEmitter
from .ssh import Session

DEFAULT_TIMEOUT = 30.0
BODY_LIMIT = 64 * 1024


@dataclass
class CheckResult:
    name: str
    ok: bool
    required: bool
    evidence: dict = field(default_factory=dict)
    duration: float = 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "required": self.required, "evidence": self.evidence,
                "duration": round(self.duration, 3)}


class ChecksFailed(Exception):
    def __init__(self, message: str, results: list[CheckResult]) -> None:
        super().__init__(message)
        self.results = results


# ---------------------------------------------------------------------------- validation
_COMMON = {"type": str, "name": str, "required": bool, "timeout": (int, float)}
_FIELDS: dict[str, dict[str, Any]] = {
    "command": {"command": (str, list), "expect_exit": (int, list), "output_regex": str},
    "http": {"url": str, "expect_status": (int, list), "body_regex": str, "via": str,
             "max_latency_ms": (int, float)},
    "tcp": {"port": int, "host": str, "via": str},
    "file_checksum": {"path": str, "sha256": str},
}
_REQUIRED = {"command": ["command"], "http": ["url"], "tcp": ["port"], "file_checksum": ["path", "sha256"]}


def _type_ok(value: Any, types: Any) -> bool:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        return False  # True is an int in Python; not a valid port or exit code here
    return isinstance(value, types)


def validate_check_specs(specs: Any) -> list[str]:
    """Every problem in a list of check specs, as readable messages (empty = valid)."""
    if not isinstance(specs, list):
        return ["checks must be a list"]
    errors: list[str] = []
    names: set[str] = set()
    for i, spec in enumerate(specs):
        where = f"check #{i + 1}"
        if not isinstance(spec, dict):
            errors.append(f"{where}: must be an object")
            continue
        kind = spec.get("type")
        if not isinstance(kind, str) or kind not in _FIELDS:
            errors.append(f"{where}: type must be one of {sorted(_FIELDS)}, got {kind!r}")
            continue
        where = f"check #{i + 1} ({spec.get('name') or kind})"
        allowed = {**_COMMON, **_FIELDS[kind]}
        for key, value in spec.items():
            if key not in allowed:
                errors.append(f"{where}: unknown field {key!r} for a {kind} check")
            elif not _type_ok(value, allowed[key]):
                errors.append(f"{where}: {key} has the wrong type ({type(value).__name__})")
        for key in _REQUIRED[kind]:
            if key not in spec:
                errors.append(f"{where}: {key} is required")
        name = _name(spec)
        if name in names:
            errors.append(f"{where}: duplicate check name {name!r}")
        names.add(name)
        if "timeout" in spec and _type_ok(spec["timeout"], (int, float)) and not 0 < spec["timeout"] <= 3600:
            errors.append(f"{where}: timeout must be between 0 and 3600 seconds")
        for key in ("output_regex", "body_regex"):
            if isinstance(spec.get(key), str):
                try:
                    re.compile(spec[key])
                except re.error as exc:
                    errors.append(f"{where}: {key} is not a valid regular expression: {exc}")
        for key in ("expect_exit", "expect_status"):
            if isinstance(spec.get(key), list) and not all(_type_ok(v, int) for v in spec[key]):
                errors.append(f"{where}: {key} must be an integer or a list of integers")
        cmd = spec.get("command")
        if kind == "command" and (cmd == "" or cmd == [] or
                                  (isinstance(cmd, list) and not all(isinstance(a, str) for a in cmd))):
            errors.append(f"{where}: command must be a non-empty string or list of strings")
        if kind == "http" and isinstance(spec.get("url"), str) and not re.match(r"https?://[^/\s]+", spec["url"]):
            errors.append(f"{where}: url must start with http:// or https://")
        if "via" in spec and spec.get("via") not in ("target", "local"):
            errors.append(f"{where}: via must be 'target' or 'local'")
        if kind == "tcp" and _type_ok(spec.get("port"), int) and not 0 < spec["port"] < 65536:
            errors.append(f"{where}: port must be 1-65535")
        if kind == "file_checksum":
            if isinstance(spec.get("path"), str) and not spec["path"].startswith("/"):
                errors.append(f"{where}: path must be absolute")
            if isinstance(spec.get("sha256"), str) and not re.fullmatch(r"[0-9a-fA-F]{64}", spec["sha256"]):
                errors.append(f"{where}: sha256 must be 64 hex digits")
    return errors


def _name(spec: dict) -> str:
    if spec.get("name"):
        return str(spec["name"])
    kind = spec.get("type")
    detail = {"command": lambda: command_string(spec.get("command", ""))[:60],
              "http": lambda: spec.get("url", ""), "tcp": lambda: f"{spec.get('host', '127.0.0.1')}:{spec.get('port')}",
              "file_checksum": lambda: spec.get("path", "")}.get(kind, lambda: "")()
    return f"{kind} {detail}"


# ---------------------------------------------------------------------------- where commands run
class _Target:
    """Runs commands on the endpoint (one SSH session for all checks) or locally."""

    def __init__(self, endpoint: Endpoint | None) -> None:
        self.endpoint = endpoint
        self.session = Session.connect(endpoint) if endpoint is not None else None

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def run(self, command: str | Sequence[str], *, timeout: float, emitter: Emitter | None = None,
            stdin: bytes | None = None) -> CommandResult:
        if self.session is not None:
            return self.session.run(command, emitter=emitter, timeout=timeout, stdin=stdin, tail_lines=200)
        cmd = command_string(command)
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        start = time.monotonic()
        try:
            p = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"command timed out after {timeout}s: {cmd}") from exc
        except FileNotFoundError:
            return CommandResult(cmd, 127, time.monotonic() - start, [], [f"{argv[0]}: not found"])
        out = p.stdout.decode("utf-8", "replace").splitlines()
        err = p.stderr.decode("utf-8", "replace").splitlines()
        for line in out:
            (emitter or NullEmitter()).log(line, "stdout")
        for line in err:
            (emitter or NullEmitter()).log(line, "stderr")
        return CommandResult(cmd, p.returncode, time.monotonic() - start, out[-200:], err[-200:])


# ---------------------------------------------------------------------------- the checks
def _expect(value: Any, default: int) -> set[int]:
    if value is None:
        return {default}
    return {value} if isinstance(value, int) else set(value)


def _check_command(spec: dict, target: _Target, emitter: Emitter, timeout: float) -> tuple[bool, dict]:
    res = target.run(spec["command"], timeout=timeout, emitter=emitter)
    allowed = _expect(spec.get("expect_exit"), 0)
    ev: dict[str, Any] = res.as_dict()
    ok = res.exit_code in allowed
    ev["expected_exit"] = sorted(allowed)
    if "output_regex" in spec:
        text = "\n".join(res.stdout_tail + res.stderr_tail)
        match = re.search(spec["output_regex"], text, re.MULTILINE)
        ev["output_regex"] = spec["output_regex"]
        ev["regex_matched"] = bool(match)
        ev["match"] = match.group(0)[:200] if match else None
        ok = ok and bool(match)
    return ok, ev


# Runs on the target with python3; prints one JSON line. HTTP errors still carry a status and body.
_HTTP_PROBE = r'''
import base64, json, sys, time, urllib.request, urllib.error
url, timeout, limit = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
t = time.monotonic()
try:
    r = urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "understudy-check"}), timeout=timeout)
    status, body = r.status, r.read(limit)
except urllib.error.HTTPError as e:
    status, body = e.code, e.read(limit)
except Exception as e:
    print(json.dumps({"error": "%s: %s" % (type(e).__name__, e), "latency_ms": (time.monotonic() - t) * 1000}))
    sys.exit(0)
print(json.dumps({"status": status, "latency_ms": (time.monotonic() - t) * 1000,
                  "body_b64": base64.b64encode(body).decode()}))
'''

_TCP_PROBE = r'''
import json, socket, sys, time
t = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print(json.dumps({"open": True, "latency_ms": (time.monotonic() - t) * 1000}))
except OSError as e:
    print(json.dumps({"open": False, "error": str(e), "latency_ms": (time.monotonic() - t) * 1000}))
'''


def _http_local(url: str, timeout: float) -> dict:
    t = time.monotonic()
    try:
        r = urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "understudy-check"}),
                                   timeout=timeout)
        status, body = r.status, r.read(BODY_LIMIT)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(BODY_LIMIT)
    except (OSError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "latency_ms": (time.monotonic() - t) * 1000}
    return {"status": status, "latency_ms": (time.monotonic() - t) * 1000,
            "body_b64": base64.b64encode(body).decode()}


def _http_target(url: str, target: _Target, timeout: float) -> dict:
    res = target.run(["python3", "-c", _HTTP_PROBE, url, str(timeout), str(BODY_LIMIT)], timeout=timeout + 15)
    if res.exit_code == 0 and res.stdout_tail:
        return json.loads(res.stdout_tail[-1])
    if res.exit_code != 127:
        return {"error": f"probe failed (exit {res.exit_code}): {' '.join(res.stderr_tail[-3:])}"}
    # no python3 on the target: curl prints the body, then our marker line with status and time
    marker = "__understudy_http__"
    res = target.run(["curl", "-sS", "-m", str(int(max(1, timeout))), "-o", "-", "-w",
                      f"\n{marker} %{{http_code}} %{{time_total}}", url], timeout=timeout + 15)
    lines = res.stdout_tail
    tail = [ln for ln in lines if ln.startswith(marker)]
    if res.exit_code == 127 or not tail:
        return {"error": "neither python3 nor curl could probe on the target: "
                         + " ".join(res.stderr_tail[-3:])}
    _, code, secs = tail[-1].split()
    body = "\n".join(ln for ln in lines if not ln.startswith(marker)).encode()
    if code == "000":
        return {"error": " ".join(res.stderr_tail[-3:]) or "no response", "latency_ms": float(secs) * 1000}
    return {"status": int(code), "latency_ms": float(secs) * 1000, "body_b64": base64.b64encode(body).decode(),
            "probe": "curl"}


def _check_http(spec: dict, target: _Target, emitter: Emitter, timeout: float) -> tuple[bool, dict]:
    via = spec.get("via", "target")
    got = _http_local(spec["url"], timeout) if via == "local" else _http_target(spec["url"], target, timeout)
    body = base64.b64decode(got.pop("body_b64", "")).decode("utf-8", "replace")
    allowed = _expect(spec.get("expect_status"), 200)
    ev: dict[str, Any] = {"url": spec["url"], "via": via, "expected_status": sorted(allowed), **got,
                          "body_excerpt": body[:500]}
    if "latency_ms" in ev:
        ev["latency_ms"] = round(ev["latency_ms"], 1)
    ok = "error" not in got and got.get("status") in allowed
    if "body_regex" in spec:
        match = re.search(spec["body_regex"], body, re.MULTILINE)
        ev["body_regex"], ev["regex_matched"] = spec["body_regex"], bool(match)
        ok = ok and bool(match)
    if "max_latency_ms" in spec and ev.get("latency_ms") is not None:
        ev["max_latency_ms"] = spec["max_latency_ms"]
        ok = ok and ev["latency_ms"] <= spec["max_latency_ms"]
    return ok, ev


def _check_tcp(spec: dict, target: _Target, emitter: Emitter, timeout: float) -> tuple[bool, dict]:
    host, port, via = spec.get("host", "127.0.0.1"), spec["port"], spec.get("via", "target")
    ev: dict[str, Any] = {"host": host, "port": port, "via": via}
    if via == "local":
        t = time.monotonic()
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ev.update(open=True)
        except OSError as exc:
            ev.update(open=False, error=str(exc))
        ev["latency_ms"] = round((time.monotonic() - t) * 1000, 1)
        return ev["open"], ev
    res = target.run(["python3", "-c", _TCP_PROBE, host, str(port), str(timeout)], timeout=timeout + 15)
    if res.exit_code == 0 and res.stdout_tail:
        ev.update(json.loads(res.stdout_tail[-1]))
        ev["latency_ms"] = round(ev["latency_ms"], 1)
    elif res.exit_code == 127:  # no python3: nc -z (busybox and netcat-openbsd both have it)
        nc = target.run(["nc", "-z", "-w", str(int(max(1, timeout))), host, str(port)], timeout=timeout + 15)
        ev.update(open=nc.exit_code == 0, probe="nc", exit_code=nc.exit_code)
        if nc.exit_code == 127:
            ev["error"] = "neither python3 nor nc on the target"
    else:
        ev.update(open=False, error=f"probe failed (exit {res.exit_code}): {' '.join(res.stderr_tail[-3:])}")
    return bool(ev.get("open")), ev


_SHA256_SH = ('if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1"; '
              'else python3 -c \'import hashlib,sys;h=hashlib.sha256();f=open(sys.argv[1],"rb")\n'
              'for b in iter(lambda: f.read(1<<20), b""): h.update(b)\nprint(h.hexdigest())\' "$1"; fi')


def _check_file_checksum(spec: dict, target: _Target, emitter: Emitter, timeout: float) -> tuple[bool, dict]:
    res = target.run(["sh", "-c", _SHA256_SH, "sh", spec["path"]], timeout=timeout)
    expected = spec["sha256"].lower()
    ev: dict[str, Any] = {"path": spec["path"], "expected": expected, "exit_code": res.exit_code}
    if res.exit_code != 0 or not res.stdout_tail:
        ev["error"] = " ".join(res.stderr_tail[-3:]) or f"exit {res.exit_code}"
        return False, ev
    ev["actual"] = res.stdout_tail[-1].split()[0].lower()
    return ev["actual"] == expected, ev


_RUNNERS = {"command": _check_command, "http": _check_http, "tcp": _check_tcp,
            "file_checksum": _check_file_checksum}


def run_checks(specs: list[dict], endpoint: Endpoint | None, emitter: Emitter | None = None) -> list[CheckResult]:
    """Run every check (a failing one does not stop the rest) and return the results in order.

    Raises ``ValueError`` for invalid specs (they should have been rejected when saved).
    """
    emitter = emitter or NullEmitter()
    errors = validate_check_specs(specs)
    if errors:
        raise ValueError("invalid checks: " + "; ".join(errors))
    emitter.phase("checks")
    results: list[CheckResult] = []
    target = _Target(endpoint)
    try:
        for i, spec in enumerate(specs):
            name, required = _name(spec), spec.get("required", True)
            timeout = float(spec.get("timeout", DEFAULT_TIMEOUT))
            start = time.monotonic()
            try:
                ok, ev = _RUNNERS[spec["type"]](spec, target, emitter, timeout)
            except (SSHError, TimeoutError, OSError, ValueError) as exc:
                # one check's failure (timeout, lost connection) is evidence, not a crash
                ok, ev = False, {"error": f"{type(exc).__name__}: {exc}"}
            ev["type"] = spec["type"]
            result = CheckResult(name, ok, required, ev, time.monotonic() - start)
            results.append(result)
            verdict = "ok" if ok else ("FAILED" if required else "failed (optional)")
            emitter.log(f"check {name}: {verdict}", "info" if ok else "stderr")
            emitter.data(f"check:{name}", result.to_dict())
            emitter.progress(i + 1, len(specs), "checks")
    finally:
        target.close()
    return results


def summarize(results: list[CheckResult]) -> tuple[bool, str]:
    """(step ok?, message naming every failed required check)."""
    failed = [r for r in results if r.required and not r.ok]
    optional = [r for r in results if not r.required and not r.ok]
    if failed:
        msg = f"{len(failed)} required check(s) failed: " + ", ".join(_why(r) for r in failed)
    else:
        msg = f"all {sum(1 for r in results if r.required)} required check(s) passed"
    if optional:
        msg += f"; optional check(s) failed: {', '.join(r.name for r in optional)}"
    return not failed, msg


def _why(r: CheckResult) -> str:
    ev = r.evidence
    if ev.get("error"):
        return f"{r.name} ({ev['error']})"
    if r.evidence.get("type") == "command":
        return f"{r.name} (exit {ev.get('exit_code')}" + (", output did not match" if ev.get("regex_matched") is False
                                                        else "") + ")"
    if r.evidence.get("type") == "http":
        return f"{r.name} (status {ev.get('status')}" + (", body did not match" if ev.get("regex_matched") is False
                                                        else "") + ")"
    if r.evidence.get("type") == "file_checksum":
        return f"{r.name} (sha256 {str(ev.get('actual'))[:12]}… != {ev['expected'][:12]}…)"
    return r.name


def require_all(results: list[CheckResult]) -> None:
    """Raise ``ChecksFailed`` if any required check failed; the message says which."""
    ok, msg = summarize(results)
    if not ok:
        raise ChecksFailed(msg, results)

