"""Acceptance checks against real processes: a local HTTP server, open/closed ports, files."""
from __future__ import annotations

import hashlib
import http.server
import socket
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from workers.engines.checks import ChecksFailed, require_all, run_checks, summarize, validate_check_specs
from workers.engines.events import RecordingEmitter


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code, body = (200, b"minidb: ok, 42 rows") if self.path == "/health" else (503, b"down")
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_checks_pass_and_fail_with_evidence(http_port: int, tmp_path: Path) -> None:
    f = tmp_path / "app.conf"
    f.write_bytes(b"listen 5432\n")
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    specs = [
        {"type": "command", "name": "service up", "command": "echo 'minidb is running'; exit 0",
         "output_regex": "is running"},
        {"type": "command", "name": "argv form", "command": [sys.executable, "-c", "import sys; sys.exit(3)"],
         "expect_exit": [0, 3]},
        {"type": "http", "name": "health", "url": f"http://127.0.0.1:{http_port}/health", "body_regex": r"\d+ rows"},
        {"type": "http", "name": "health local", "url": f"http://127.0.0.1:{http_port}/health", "via": "local"},
        {"type": "tcp", "name": "port", "port": http_port},
        {"type": "file_checksum", "name": "config", "path": str(f), "sha256": digest},
        # failures
        {"type": "command", "name": "wrong exit", "command": "exit 2"},
        {"type": "http", "name": "broken page", "url": f"http://127.0.0.1:{http_port}/other"},
        {"type": "tcp", "name": "nothing listens", "port": closed_port(), "timeout": 2},
        {"type": "file_checksum", "name": "changed config", "path": str(f), "sha256": "0" * 64},
        {"type": "file_checksum", "name": "missing file", "path": str(tmp_path / "nope"), "sha256": "0" * 64,
         "required": False},
    ]
    assert validate_check_specs(specs) == []
    em = RecordingEmitter()
    results = {r.name: r for r in run_checks(specs, None, em)}
    for name in ("service up", "argv form", "health", "health local", "port", "config"):
        assert results[name].ok, results[name]
    assert results["health"].evidence["status"] == 200 and results["health"].evidence["latency_ms"] >= 0
    assert results["service up"].evidence["match"] == "is running"
    for name in ("wrong exit", "broken page", "nothing listens", "changed config", "missing file"):
        assert not results[name].ok, results[name]
    assert results["broken page"].evidence["status"] == 503
    assert results["changed config"].evidence["actual"] == digest
    assert "minidb is running" in em.lines("stdout")  # command output is streamed
    ok, msg = summarize(list(results.values()))
    assert not ok
    assert msg.startswith("4 required check(s) failed: wrong exit (exit 2)")
    assert "broken page (status 503)" in msg and "nothing listens" in msg and "changed config" in msg
    assert "optional check(s) failed: missing file" in msg
    with pytest.raises(ChecksFailed, match="wrong exit"):
        require_all(list(results.values()))


def test_all_required_passing_makes_the_step_pass() -> None:
    results = run_checks([{"type": "command", "command": "true"},
                          {"type": "command", "command": "false", "required": False}], None)
    ok, msg = summarize(results)
    assert ok and "all 1 required check(s) passed" in msg
    require_all(results)


def test_command_timeout_is_a_failed_check_not_a_crash() -> None:
    [r] = run_checks([{"type": "command", "name": "slow", "command": "sleep 5", "timeout": 0.5}], None)
    assert not r.ok and "timed out" in r.evidence["error"]


def test_spec_validation_names_every_problem() -> None:
    errors = validate_check_specs([
        {"type": "command"},
        {"type": "http", "url": "ftp://x", "expect_status": "200"},
        {"type": "tcp", "port": 70000, "via": "moon"},
        {"type": "file_checksum", "path": "relative", "sha256": "abc"},
        {"type": "command", "command": "true", "output_regex": "(", "colour": "red"},
        {"type": "dance"},
        {"type": "tcp", "port": True},
        "not a dict",
    ])
    text = "\n".join(errors)
    for needle in ("command is required", "url must start with http", "expect_status has the wrong type",
                   "port must be 1-65535", "via must be 'target' or 'local'", "path must be absolute",
                   "sha256 must be 64 hex digits", "output_regex is not a valid regular expression",
                   "unknown field 'colour'", "type must be one of", "port has the wrong type", "must be an object"):
        assert needle in text, needle
    assert validate_check_specs({"type": "tcp"}) == ["checks must be a list"]
    with pytest.raises(ValueError, match="invalid checks"):
        run_checks([{"type": "tcp"}], None)
