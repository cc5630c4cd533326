"""Acceptance checks over SSH on a real test host: command, HTTP and TCP probed from the
target itself (like a clone on an isolated network), file checksum."""
from __future__ import annotations

from typing import Any

from workers.engines.checks import run_checks, summarize
from workers.engines.ssh import Endpoint


def endpoint(host: Any) -> Endpoint:
    return Endpoint(host=host.address, port=host.port, user=host.user, key_path=str(host.client_key_path),
                    host_key=host.host_public_key, label=host.hostname)


def test_checks_over_ssh(production_host: Any) -> None:
    prod = production_host
    ep = endpoint(prod)
    sha = prod.run("sha256sum /etc/hostname").stdout.split()[0]
    # a web service inside the host, reachable only from the host itself (like a clone's)
    prod.run("mkdir -p /srv/www && echo 'minidb ok' > /srv/www/health && "
             "(cd /srv/www && nohup python3 -m http.server 8088 --bind 127.0.0.1 >/dev/null 2>&1 &) && "
             "for i in 1 2 3 4 5 6 7 8 9 10; do python3 -c 'import socket; socket.create_connection("
             "(\"127.0.0.1\", 8088), 1)' 2>/dev/null && break; sleep 0.2; done")
    results = run_checks([
        {"type": "http", "name": "health page", "url": "http://127.0.0.1:8088/health", "body_regex": "minidb ok"},
        {"type": "http", "name": "missing page", "url": "http://127.0.0.1:8088/nope", "required": False},
        {"type": "tcp", "name": "web port", "port": 8088},
        {"type": "command", "name": "minidb status", "command": "minidb-service status"},
        {"type": "command", "name": "hostname", "command": ["cat", "/etc/hostname"], "output_regex": "production"},
        {"type": "file_checksum", "name": "hostname file", "path": "/etc/hostname", "sha256": sha},
        {"type": "tcp", "name": "sshd from inside", "port": 22, "host": "127.0.0.1", "required": False},
        {"type": "tcp", "name": "nothing on 1", "port": 1, "timeout": 2, "required": False},
    ], ep)
    by = {r.name: r for r in results}
    assert by["minidb status"].ok and by["hostname"].ok and by["hostname file"].ok, results
    assert not by["nothing on 1"].ok
    assert by["health page"].ok and by["health page"].evidence["status"] == 200, by["health page"]
    assert by["missing page"].evidence["status"] == 404 and not by["missing page"].ok
    assert by["web port"].ok
    ok, msg = summarize(results)
    assert ok, msg
