"""Production and a second host run at once, each with its own address, key, hostname and tree."""
from __future__ import annotations

import subprocess


def test_two_hosts_at_once_are_distinct_and_isolated(make_test_host) -> None:
    prod = make_test_host("production", minidb=True)
    other = make_test_host("standby", minidb=True)
    assert (prod.address, prod.port) != (other.address, other.port)
    assert prod.host_public_key != other.host_public_key
    for host in (prod, other):
        out = subprocess.run(host.target.ssh_argv("hostname; minidb-service status"), capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == host.hostname
        assert out.stdout.splitlines()[1].startswith("up ")
    prod.run("echo only-prod > /root/mark")
    assert other.run("cat /root/mark", check=False).returncode != 0
    # the same minidb port in both: each lives in its own network namespace (or the test skips that part)
    if prod.netns_name and other.netns_name:
        prod.run("minidb-put k from-prod")
        assert other.run("minidb-get k", check=False).returncode == 1
    # one host's key must not open the other
    argv = other.target.ssh_argv("true")
    argv[argv.index(f"UserKnownHostsFile={other.known_hosts_path}")] = f"UserKnownHostsFile={prod.known_hosts_path}"
    assert subprocess.run(argv, capture_output=True, timeout=30).returncode == 255
