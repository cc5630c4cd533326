"""``tar -C / --one-file-system`` over SSH streams the test host's own tree, not the CI machine's."""
from __future__ import annotations

import io
import subprocess
import tarfile
import time
from pathlib import Path

from testbed.rootfs import build_rootfs, tree_size


def test_tar_over_ssh_streams_the_rootfs_without_pseudo_filesystems(make_test_host) -> None:
    host = make_test_host("db01", minidb=True)
    host.run("echo marker > /root/only-on-db01 && mkdir -p /tmp/scratch && echo x > /run/ephemeral")
    cmd = "tar -C / --one-file-system --numeric-owner --xattrs --acls -cf - ."
    out = subprocess.run(host.target.ssh_argv(cmd), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(members["./root/only-on-db01"]).read() == b"marker\n"
        assert tar.extractfile(members["./etc/hostname"]).read() == b"db01\n"
    names = set(members)
    for expected in ("./usr/bin/tar", "./usr/sbin/sshd", "./usr/bin/python3.11", "./opt/minidb/minidb/storage.py",
                     "./etc/ssh/sshd_config", "./etc/inittab", "./etc/init.d/rcS", "./var/lib/minidb/control.json",
                     "./etc/passwd", "./root/.ssh/authorized_keys"):
        assert expected in names
    # mount points are kept as empty directories, their contents are not
    for mnt in ("proc", "sys", "dev", "run", "tmp"):
        assert not any(n.startswith(f"./{mnt}/") for n in names), mnt
    # nothing from the CI machine's own root
    assert not any(n.startswith(("./work/", "./home/root", "./usr/lib/python3/dist-packages")) for n in names)
    assert members["./usr/sbin/sshd"].uid == 0


def test_cached_rootfs_copy_is_fast_and_self_contained(testhost_base_rootfs, tmp_path) -> None:
    t0 = time.monotonic()
    root = build_rootfs(tmp_path / "rootfs", hostname="quick")
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"cached rootfs copy took {elapsed:.2f}s"
    assert 15e6 < tree_size(root) < 80e6
    assert (root / "etc/hostname").read_text() == "quick\n"
    assert (root / "lib64").is_symlink() and (root / "lib64/ld-linux-x86-64.so.2").exists()
    # run the tree's own python (not the CI machine's) chrooted: hashlib via OpenSSL must work
    out = subprocess.run(["chroot", str(root), "/usr/bin/python3", "-c",
                          "import hashlib, ssl, sys; print(sys.prefix, hashlib.sha256(b'').hexdigest()[:8])"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["/usr", "e3b0c442"]
    shadow = (root / "etc/shadow").read_text()
    assert shadow.startswith("root:*:")
    assert not (root / "etc/ssh/ssh_host_ed25519_key").exists(), "base must not ship a host key"
    assert Path(root / "etc/fstab").read_text().count("/dev/vda") == 1
