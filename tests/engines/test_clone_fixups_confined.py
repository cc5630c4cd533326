"""The clone's fix-ups and boot-file lookup stay inside the staged tree, whatever production put there.

Production wrote the staged tree and the worker fixes it up as root on the hypervisor: each path a
fix-up touches is made, in turn, a symlink (absolute, relative; to a file, to a directory, also the
intermediate directories) or a hard link to a file outside the tree. Outside sits a mirror of the
tree whose every file carries a sentinel; nothing there may change, and the sentinel may appear
neither in a file of the tree (other than the hard link the test planted) nor in an emitted event.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.support.clone import TREE_KINDS, tree_parent
from workers.engines import clone
from workers.engines.clone import CloneOptions, FixupError, fixup_clone
from workers.engines.confined import ConfinementError, Root
from workers.engines.events import RecordingEmitter
from workers.engines.image import ImageError, find_boot_files

SENTINEL = "HYPERVISOR-SENTINEL-7f3a91"
KERNEL = "boot/vmlinuz-6.1.0-9-amd64"
INITRD = "boot/initrd.img-6.1.0-9-amd64"

FILES = [
    "etc/hostname", "etc/hosts", "etc/fstab", "etc/network/interfaces", "etc/network/interfaces.production",
    "etc/network/interfaces.d/eth1", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
    "etc/ssh/ssh_host_ecdsa_key", "etc/ssh/sshd_config", "root/.ssh/authorized_keys",
    "etc/understudy/service-lists", "etc/understudy/services.enabled", "etc/systemd/system/cron.service",
    "etc/systemd/network/10-understudy-clone.network", "etc/systemd/network/eth0.network",
    "etc/netplan/10-understudy-clone.yaml", "etc/netplan/50-cloud.yaml", KERNEL, INITRD, "vmlinuz",
]
DIRS = [
    "etc", "etc/ssh", "root", "root/.ssh", "etc/network", "etc/network/interfaces.d", "etc/systemd",
    "etc/systemd/system", "etc/systemd/system/multi-user.target.wants", "etc/systemd/network", "etc/netplan",
    "etc/rc2.d", "etc/understudy", "boot",
]
CASES = ([(p, how) for p in FILES for how in ("absolute", "relative", "hardlink")]
         + [(p, how) for p in DIRS for how in ("absolute", "relative")])


def _benign_tree(root: Path) -> Path:
    """A Debian-style server's tree with every file a fix-up reads or writes."""
    def put(rel: str, text: str, mode: int = 0o644) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        os.chmod(root / rel, mode)

    put("etc/hostname", "db-prod-01\n")
    put("etc/hosts", "127.0.0.1\tlocalhost\n192.0.2.10\tdb-prod-01\n")
    put("etc/fstab", "UUID=1 / ext4 defaults 0 1\nUUID=2 /srv xfs defaults 0 2\n")
    put("etc/network/interfaces", "auto eth0\niface eth0 inet static\n")
    put("etc/network/interfaces.d/eth1", "iface eth1 inet static\n")
    for kind in ("ed25519", "ecdsa"):
        put(f"etc/ssh/ssh_host_{kind}_key", "production private key\n", 0o600)
        put(f"etc/ssh/ssh_host_{kind}_key.pub", f"ssh-{kind} AAAAproduction\n")
    put("etc/ssh/sshd_config", "PermitRootLogin no\n")
    put("root/.ssh/authorized_keys", "ssh-ed25519 AAAAoperator ops\n", 0o600)
    put("etc/understudy/services.enabled", "cron\nminidb\n")
    put("etc/understudy/service-lists", "/etc/understudy/services.enabled\n")
    put("etc/systemd/system/cron.service", "[Unit]\n")
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (root / "etc/systemd/system/multi-user.target.wants/cron.service").symlink_to("/lib/systemd/system/cron.service")
    put("etc/systemd/network/eth0.network", "[Match]\nName=eth0\n")
    put("etc/netplan/50-cloud.yaml", "network: {}\n")
    (root / "etc/rc2.d").mkdir(parents=True)
    (root / "etc/rc2.d/S01cron").symlink_to("../init.d/cron")
    put(KERNEL, "kernel\n")
    put(INITRD, "initrd\n")
    (root / "vmlinuz").symlink_to("/" + KERNEL)
    return root


def _digest(top: Path) -> str:
    """Names, types, modes, owners, link targets and contents of everything under ``top``."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            st = p.lstat()
            h.update(f"{p.relative_to(top)} {st.st_mode:o} {st.st_uid} {st.st_gid}\n".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISREG(st.st_mode):
                h.update(p.read_bytes())
    return h.hexdigest()


def _hostile(tmp_path: Path, rel: str, how: str, parent: Path | None = None
             ) -> tuple[Path, Path, set[tuple[int, int]]]:
    """(tree, outside, inodes planted as hard links). The tree is built under ``parent`` (default
    ``tmp_path``), the outside mirror in ``tmp_path``."""
    tree = _benign_tree((parent or tmp_path) / "staging")
    outside = tmp_path / "hypervisor"
    shutil.copytree(tree, outside / "mirror", symlinks=True)
    for p in (outside / "mirror").rglob("*"):
        if p.is_file() and not p.is_symlink():
            p.write_text(f"{SENTINEL}\nPermitRootLogin no\ncron\n" + p.read_text())
    (outside / "secret").write_text(SENTINEL + "\n")
    mirrored = outside / "mirror" / rel
    target = mirrored if (mirrored.exists() and not mirrored.is_symlink()) else outside / "secret"
    at = tree / rel
    if at.is_dir() and not at.is_symlink():
        shutil.rmtree(at)
    else:
        at.unlink(missing_ok=True)
    at.parent.mkdir(parents=True, exist_ok=True)
    planted: set[tuple[int, int]] = set()
    if how == "hardlink":
        os.link(target, at)
        st = at.stat()
        planted.add((st.st_dev, st.st_ino))
    elif how == "absolute":
        at.symlink_to(target)
    else:
        at.symlink_to(os.path.relpath(target, at.parent))
    return tree, outside, planted


def _sentinel_in_tree(tree: Path, planted: set[tuple[int, int]]) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(tree):
        for name in filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in planted \
                    and SENTINEL.encode() in p.read_bytes():
                found.append(str(p.relative_to(tree)))
    return found


@pytest.fixture(params=TREE_KINDS)
def tree_kind(request):
    return request.param


@pytest.mark.parametrize("rel, how", CASES, ids=[f"{how}:{rel}" for rel, how in CASES])
def test_fixups_and_boot_files_never_leave_the_tree(tmp_path, worker_key, rel, how, tree_kind):
    with tree_parent(tree_kind, tmp_path) as parent:
        _fix_up_a_hostile_tree(tmp_path, parent, worker_key, rel, how, tree_kind)


def _fix_up_a_hostile_tree(tmp_path, parent, worker_key, rel, how, tree_kind):
    if how == "hardlink" and tree_kind == "mounted image":
        # the image is its own file system: production's tree cannot hard-link a hypervisor file
        with pytest.raises(OSError) as exc:
            _hostile(tmp_path, rel, how, parent)
        assert exc.value.errno == errno.EXDEV
        return
    tree, outside, planted = _hostile(tmp_path, rel, how, parent)
    before = _digest(outside)
    em = RecordingEmitter()
    opts = CloneOptions(name="us-t-confined", hostname="db-clone", disable_services=["cron", "minidb"])
    errors = []
    try:
        fixup_clone(tree, opts, worker_key[1], em)
    except FixupError as exc:
        errors.append(str(exc))
    copies = tmp_path / "clone-dir"
    copies.mkdir()
    try:
        boot = find_boot_files(tree)
        clone._copy_sparse(tree, boot.kernel, copies / "vmlinuz")
        if boot.initrd:
            clone._copy_sparse(tree, boot.initrd, copies / "initrd.img")
    except (ImageError, clone.BootFilesMissing) as exc:
        errors.append(str(exc))

    assert _digest(outside) == before, "a file outside the clone's tree changed"
    assert _sentinel_in_tree(tree, planted) == []
    for copy in copies.iterdir():
        assert SENTINEL not in copy.read_text(errors="replace")
    events = json.dumps([e.payload for e in em.events]) + json.dumps(errors)
    assert SENTINEL not in events
    if how == "hardlink" and errors:
        assert "hard links" in " ".join(errors)


def test_a_benign_tree_with_symlinks_inside_it_is_fixed_up_through_them(tmp_path, worker_key):
    """Symlinks that stay in the tree resolve as the clone would resolve them (tree = /)."""
    tree = _benign_tree(tmp_path / "staging")
    (tree / "etc/network/interfaces.real").write_text((tree / "etc/network/interfaces").read_text())
    (tree / "etc/network/interfaces").unlink()
    (tree / "etc/network/interfaces").symlink_to("/etc/network/interfaces.real")
    (tree / "usr/local/etc").mkdir(parents=True)
    (tree / "etc/understudy").rename(tree / "usr/local/etc/understudy")
    (tree / "etc/understudy").symlink_to("../usr/local/etc/understudy")
    opts = CloneOptions(name="us-t-confined", hostname="db-clone", disable_services=["minidb"])
    rep = fixup_clone(tree, opts, worker_key[1], RecordingEmitter())
    assert "iface eth0 inet static" in (tree / "etc/network/interfaces.production").read_text()
    assert "inet dhcp" in (tree / "etc/network/interfaces").read_text()
    assert rep.services["minidb"][0] == "removed from /etc/understudy/services.enabled"
    assert (tree / "usr/local/etc/understudy/services.enabled").read_text() == "cron\n"
    assert find_boot_files(tree).kernel == tree / KERNEL


def test_a_write_replaces_the_name_and_keeps_a_hard_linked_inode(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("outside\n")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    os.link(outside, tree / "etc/fstab")
    with Root(tree) as root:
        with pytest.raises(ConfinementError, match="2 hard links"):
            root.read_text("etc/fstab")
        root.write_text("etc/fstab", "new\n")
    assert outside.read_text() == "outside\n" and outside.stat().st_nlink == 1
    assert (tree / "etc/fstab").read_text() == "new\n"
    assert [p.name for p in (tree / "etc").iterdir()] == ["fstab"]   # no temp file left


def test_a_symlink_loop_is_a_clear_error(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/a").symlink_to("b")
    (tmp_path / "etc/b").symlink_to("/etc/a")
    with Root(tmp_path) as root, pytest.raises(ConfinementError, match="too many symlinks"):
        root.read_text("etc/a")


def test_copy_out_keeps_holes_and_is_private(tmp_path):
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    with open(tree / "boot/initrd.img", "wb") as fh:
        fh.write(b"head")
        fh.seek(8 << 20)
        fh.write(b"tail")
    dst = tmp_path / "initrd.img"
    with Root(tree) as root:
        root.copy_out("boot/initrd.img", dst)
    assert dst.read_bytes() == (tree / "boot/initrd.img").read_bytes()
    assert dst.stat().st_blocks * 512 < 1 << 20
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600


def test_resolve_stays_in_the_tree_past_missing_names_and_files(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hostname").write_text("x\n")
    (tmp_path / "etc/up").symlink_to("../../../..")
    (tmp_path / "boot").symlink_to("/")
    with Root(tmp_path) as root:
        assert root.resolve("etc/missing/../hostname") == "etc/hostname"
        assert root.resolve("etc/hostname/../../etc/up/etc") == "etc"
        assert root.resolve("etc/up/../../x") == "x"
        assert root.resolve("boot") == "" and root.is_dir("boot")
