"""Pure parts of the clone engine: fix-ups on a Debian-style tree (systemd + sysvinit +
ifupdown, the layout of a real server, not only the test rootfs), tar diagnostics, the
estimate, the remote tar command line."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from workers.engines.clone import (
    CloneOptions, TarDiagnostics, TarMissingError, disable_service, fix_fstab, fixup_clone, parse_estimate,
    remote_tar_command,
)
from workers.engines.events import RecordingEmitter

DEBIAN_FSTAB = """\
# /etc/fstab: static file system information.
UUID=8d1c-root /               ext4    errors=remount-ro 0       1
UUID=77aa-boot /boot           ext4    defaults        0       2
/swapfile      none            swap    sw              0       0
UUID=99bb-data /srv/data       xfs     defaults,noatime 0      2
nas:/exports   /mnt/backup     nfs     ro              0       0
tmpfs          /var/tmp/fast   tmpfs   size=64m        0       0
proc           /proc           proc    defaults        0       0
"""


def _debian_tree(root: Path) -> Path:
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (root / "etc/systemd/system/timers.target.wants").mkdir(parents=True)
    for unit in ("cron.service", "ssh.service", "postgresql.service"):
        (root / "etc/systemd/system/multi-user.target.wants" / unit).symlink_to(f"/lib/systemd/system/{unit}")
    (root / "etc/systemd/system/timers.target.wants/mailer.timer").symlink_to("/lib/systemd/system/mailer.timer")
    for rl in ("2", "3", "5"):
        d = root / f"etc/rc{rl}.d"
        d.mkdir(parents=True)
        (d / "S01cron").symlink_to("../init.d/cron")
        (d / "S01ssh").symlink_to("../init.d/ssh")
    (root / "etc/network").mkdir(parents=True)
    (root / "etc/network/interfaces").write_text("auto eth0\niface eth0 inet static\n  address 192.0.2.10/24\n")
    (root / "etc/ssh").mkdir(parents=True)
    for kind in ("rsa", "ecdsa", "ed25519"):
        (root / f"etc/ssh/ssh_host_{kind}_key").write_text("production private key\n")
        (root / f"etc/ssh/ssh_host_{kind}_key.pub").write_text(f"ssh-{kind} AAAAproduction\n")
    (root / "etc/ssh/sshd_config").write_text("Port 22\nPermitRootLogin no\n")
    (root / "etc/fstab").write_text(DEBIAN_FSTAB)
    (root / "etc/hostname").write_text("db-prod-01\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n192.0.2.10\tdb-prod-01.example.com db-prod-01\n")
    (root / "root").mkdir(mode=0o700)
    return root


def test_fixups_on_a_debian_style_tree(tmp_path, worker_key):
    root = _debian_tree(tmp_path / "root")
    opts = CloneOptions(name="us-x", hostname="db-prod-01-clone", disable_services=["cron", "mailer", "nosuch"])
    em = RecordingEmitter()
    rep = fixup_clone(root, opts, worker_key[1], em)

    assert (root / "etc/hostname").read_text() == "db-prod-01-clone\n"
    hosts = (root / "etc/hosts").read_text()
    assert "127.0.1.1\tdb-prod-01-clone" in hosts and "192.0.2.10" not in hosts.replace("# understudy", "")
    # every host key type production had is regenerated; ed25519 is the pin
    assert sorted(rep.host_keys) == ["ecdsa", "ed25519", "rsa"]
    assert rep.host_key.startswith("ssh-ed25519 ") and "production" not in rep.host_key
    assert (root / "etc/ssh/ssh_host_rsa_key").read_text() != "production private key\n"
    assert oct((root / "etc/ssh/ssh_host_ed25519_key").stat().st_mode & 0o777) == "0o600"
    assert "PermitRootLogin prohibit-password" in (root / "etc/ssh/sshd_config").read_text()
    assert worker_key[1] in (root / "root/.ssh/authorized_keys").read_text()
    # fstab: root on /dev/vda; devices the clone lacks (boot, data, swap, NFS) commented out
    live = [l for l in (root / "etc/fstab").read_text().splitlines() if l and not l.startswith("#")]
    assert live[0] == "/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t1"
    assert [l.split()[1] for l in live] == ["/", "/var/tmp/fast", "/proc"]
    assert len(rep.fstab_disabled) == 4
    # network: DHCP on eth0 (qemu user-net), production's static config kept aside
    assert "iface eth0 inet dhcp" in (root / "etc/network/interfaces").read_text()
    assert "192.0.2.10" in (root / "etc/network/interfaces.production").read_text()
    # services: systemd wants-links gone + masked, the timer too; sysv S links become K links
    sysd = root / "etc/systemd/system"
    assert not (sysd / "multi-user.target.wants/cron.service").is_symlink()
    assert os.readlink(sysd / "cron.service") == "/dev/null"
    assert (sysd / "multi-user.target.wants/ssh.service").is_symlink()
    assert not (sysd / "timers.target.wants/mailer.timer").is_symlink()
    for rl in ("2", "3", "5"):
        assert not (root / f"etc/rc{rl}.d/S01cron").is_symlink() and (root / f"etc/rc{rl}.d/K01cron").is_symlink()
        assert (root / f"etc/rc{rl}.d/S01ssh").is_symlink()
    assert rep.services["cron"] and rep.services["mailer"]
    assert rep.services["nosuch"] == ["masked nosuch.service"]


def test_a_declared_service_list_loses_the_disabled_service(tmp_path):
    (tmp_path / "etc/understudy").mkdir(parents=True)
    (tmp_path / "etc/understudy/services.enabled").write_text("minidb\nreplicator\n")
    (tmp_path / "etc/understudy/service-lists").write_text("# lists our init reads\n/etc/understudy/services.enabled\n")
    assert disable_service(tmp_path, "minidb") == ["removed from /etc/understudy/services.enabled"]
    assert (tmp_path / "etc/understudy/services.enabled").read_text() == "replicator\n"
    assert disable_service(tmp_path, "minidb") == []


def test_an_undeclared_service_list_is_left_alone(tmp_path):
    (tmp_path / "etc/understudy").mkdir(parents=True)
    (tmp_path / "etc/understudy/services.enabled").write_text("minidb\nreplicator\n")
    assert disable_service(tmp_path, "minidb") == []
    assert (tmp_path / "etc/understudy/services.enabled").read_text() == "minidb\nreplicator\n"


def test_a_declared_service_list_cannot_point_out_of_the_tree(tmp_path):
    outside = tmp_path / "outside.list"
    outside.write_text("minidb\n")
    root = tmp_path / "root"
    (root / "etc/understudy").mkdir(parents=True)
    (root / "etc/understudy/escape").symlink_to(outside)   # absolute: resolved inside the tree
    (root / "etc/understudy/service-lists").write_text(f"/etc/understudy/escape\n/../{outside.name}\n")
    assert disable_service(root, "minidb") == []
    assert outside.read_text() == "minidb\n"


def test_fstab_without_a_root_line_gets_one(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/fstab").write_text("proc /proc proc defaults 0 0\n")
    assert fix_fstab(tmp_path) == []
    assert (tmp_path / "etc/fstab").read_text().splitlines()[0].startswith("/dev/vda\t/\text4")


@pytest.mark.parametrize("line, kind, name", [
    ("tar: ./var/log/syslog: file changed as we read it", "changed", "/var/log/syslog"),
    ("tar: ./var/lib/db/wal.0003: File removed before we read it", "vanished", "/var/lib/db/wal.0003"),
    ("tar: ./srv/db/payroll.db: Cannot open: Permission denied", "unreadable", "/srv/db/payroll.db"),
    ("tar: ./root: Cannot open: Permission denied", "unreadable", "/root"),
    ("tar: ./var/lib/big.dat: File shrank by 4096 bytes; padding with zeros", "changed", "/var/lib/big.dat"),
    ("tar: ./run/x.sock: socket ignored", "ignored", None),
    ("tar: Exiting with failure status due to previous errors", "ignored", None),
    ("tar: ./etc: Cannot read: Input/output error", "other", None),
])
def test_tar_diagnostics(line, kind, name):
    d = TarDiagnostics()
    assert d.feed(line) == kind
    if name:
        assert name in getattr(d, kind)


def test_estimate_parsing():
    out = ("TARVERSION tar (GNU tar) 1.34\nXATTRS\nACLS\nCLOCK 1795638997.%N\nDU 2048\t/\nBOOTSEP\nDUB 512\t/boot\n"
           "DUX 1024\t/srv/big\nFILES 300\nFILESB 7\nSWAP /swapfile\nMOUNT /home ext4 /dev/sdb1\nEND\n")
    f = parse_estimate(out, ["/srv/big"])
    assert (f.bytes, f.files, f.clock) == ((2048 + 512 - 1024) * 1024, 307, 1795638997.0)
    assert f.xattrs and f.acls and not f.selinux and f.boot_separate
    assert f.swap_files == ["/swapfile"] and f.other_mounts == ["/home ext4 /dev/sdb1"]
    with pytest.raises(TarMissingError, match="tar missing on the host"):
        parse_estimate("NOTAR\n", [])
    with pytest.raises(TarMissingError, match="not GNU tar"):
        parse_estimate("TARVERSION tar: unrecognized option '--version'\nEND\n", [])


def test_remote_tar_command_excludes_and_one_file_system():
    f = parse_estimate("TARVERSION tar (GNU tar) 1.34\nXATTRS\nDU 1\nFILES 1\nSWAP /swapfile\nBOOTSEP\nEND\n", [])
    cmd = remote_tar_command(CloneOptions(name="x", hostname="y", exclude=["/var/cache/huge dir"]), f,
                             newer_than=100.5, xattrs=True, acls=False)
    argv = shlex.split(cmd)
    assert argv[:3] == ["LC_ALL=C", "exec", "tar"]
    for flag in ("--one-file-system", "--numeric-owner", "--sparse", "--xattrs", "--anchored",
                 "--exclude=./proc/*", "--exclude=./tmp/*", "--exclude=./swapfile",
                 "--exclude=./var/cache/huge dir", "--newer=@100.500000"):
        assert flag in argv
    assert "--acls" not in argv
    assert argv[-3:] == ["--", ".", "./boot"]   # separate /boot is streamed too
