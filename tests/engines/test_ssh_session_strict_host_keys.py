"""workers.engines.ssh against a real sshd test host: pinned keys, streaming, quoting."""
import subprocess

import pytest

from workers.engines.events import RecordingEmitter
from workers.engines.ssh import (AuthenticationFailed, CommandFailed, CommandTimeout, Endpoint, HostKeyMismatch,
                                 HostUnreachable, Session, fingerprint, scan_host_key)


@pytest.fixture(scope="module")
def host(shared_production_host):
    return shared_production_host


def endpoint(h, **kw) -> Endpoint:
    base = dict(host=h.address, port=h.port, user=h.user, key_path=str(h.client_key_path), host_key=h.host_public_key)
    base.update(kw)
    return Endpoint(**base)


def _other_key(tmp_path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    return " ".join((tmp_path / "k.pub").read_text().split()[:2])


def test_pinned_key_connects_and_streams_lines(host):
    em = RecordingEmitter()
    with Session.connect(endpoint(host)) as s:
        res = s.run("printf 'a\\nb\\npartial'; echo err >&2", emitter=em)
    assert res.exit_code == 0
    assert em.lines("stdout") == ["a", "b", "partial"] and em.lines("stderr") == ["err"]


def test_changed_host_key_is_refused(host, tmp_path):
    with pytest.raises(HostKeyMismatch, match="HOST KEY MISMATCH") as err:
        Session.connect(endpoint(host, host_key=_other_key(tmp_path)))
    assert fingerprint(host.host_public_key) in str(err.value)


def test_no_pinned_key_is_refused(host):
    with pytest.raises(HostKeyMismatch, match="no host key is pinned"):
        Session.connect(endpoint(host, host_key=""))


def test_wrong_client_key_fails_authentication(host, tmp_path):
    _other_key(tmp_path)
    with pytest.raises(AuthenticationFailed):
        Session.connect(endpoint(host, key_path=str(tmp_path / "k")))
    with pytest.raises(AuthenticationFailed, match="not found"):
        Session.connect(endpoint(host, key_path=str(tmp_path / "missing")))


def test_unreachable_port_is_a_clear_error(host):
    with pytest.raises(HostUnreachable, match="cannot connect"):
        Session.connect(endpoint(host, host="127.0.0.1", port=1))


def test_argv_is_quoted_never_interpreted(host):
    with Session.connect(endpoint(host)) as s:
        out = s.check_output(["printf", "%s|", "a b", "$(touch /tmp/pwned)", "x;y"])
        assert out == b"a b|$(touch /tmp/pwned)|x;y|"
        assert s.run("test -e /tmp/pwned").exit_code == 1


def test_exit_code_and_timeout(host):
    with Session.connect(endpoint(host)) as s:
        with pytest.raises(CommandFailed, match="exit code 2") as err:
            s.run("echo nope >&2; exit 2", expect_exit=0)
        assert err.value.result.stderr_tail == ["nope"]
        with pytest.raises(CommandTimeout):
            s.run("sleep 20", timeout=1)
        assert s.check_output("echo still usable") == b"still usable\n"


def test_openssh_argv_uses_the_same_pinned_key(host, tmp_path):
    ep = endpoint(host)
    kh = ep.write_known_hosts(tmp_path)
    out = subprocess.run(ep.openssh_argv("hostname", kh), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == host.hostname
    bad = endpoint(host, host_key=_other_key(tmp_path))
    kh2 = bad.write_known_hosts(tmp_path)
    out = subprocess.run(bad.openssh_argv("hostname", kh2), capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "host key" in out.stderr.lower()


def test_scan_host_key_returns_the_presented_key(host):
    assert scan_host_key(host.address, host.port) == host.host_public_key
