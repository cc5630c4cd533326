"""``clone``: live P2V of the production host into a VM on the rehearsal's hypervisor.

The engine (workers/engines/clone.py) streams production's root filesystem over
SSH, fixes the copy up (new hostname and host keys, the worker's key authorized,
services that must not run in a clone disabled), builds a disk, boots it on a
network with no route to production and waits until it answers SSH with its new
key. This module records the result as the rehearsal's ``Clone`` so later steps
with target=clone reach it — pinned to the key generated in the fix-up.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
from pathlib import Path

from django.conf import settings

from rehearsals.models import Clone
from runbooks.kinds import StepFailed, StepKind, registry
from runbooks.params import AbsPath, Int, List, Str
from workers.engines.clone import CloneError, CloneOptions, StandInOptions, clone_host
from workers.engines.hypervisor import HypervisorError
from workers.engines.ssh import SSHError


def worker_keypair() -> tuple[Path, str]:
    """The key workers use to log into clones; created on first use."""
    key = Path(settings.UNDERSTUDY_WORKER_KEY)
    if not key.exists():
        if not key.parent.exists():
            # the private key's own dir: nobody but the worker's user lists or reads it
            key.parent.mkdir(parents=True)
            os.chmod(key.parent, 0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "understudy-worker", "-f", str(key)],
                       check=True, capture_output=True)
    pub = key.with_name(key.name + ".pub").read_text().split()
    return key, f"{pub[0]} {pub[1]}"


def domain_name(rehearsal, hostname: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", hostname)[:40]
    return f"us-r{rehearsal.pk}-{safe}"


@registry.register
class CloneStep(StepKind):
    name = "clone"
    label = "Live P2V clone to a VM"
    targets = frozenset({"production"})
    provides_stand_in = True
    params = {
        "pre_command": Str(help="Run on production before copying (flush/checkpoint); "
                                "not in a dress rehearsal, which only reads production."),
        "post_command": Str(help="Run on production after copying; not in a dress rehearsal."),
        "exclude": List(of=AbsPath(), default=list, help="Paths left out besides /proc /sys /dev /run /tmp."),
        "disable_services": List(of=Str(), default=list, help="Services that must not run in the clone."),
        "hostname": Str(help="Clone's hostname (default: <production>-clone-<rehearsal>)."),
        "memory_mib": Int(default=1024, min=128),
        "vcpus": Int(default=1, min=1, max=64),
        "headroom_percent": Int(default=30, min=5, max=500),
        "boot_timeout": Int(default=300, min=10),
    }

    def summary(self, params):
        parts = ["copy / over SSH into a VM"]
        if params.get("exclude"):
            parts.append("excluding " + ", ".join(params["exclude"]))
        if params.get("disable_services"):
            parts.append("disable in the clone: " + ", ".join(params["disable_services"]))
        return "; ".join(parts)

    def carries_over(self, spec):
        # the workbench it built is what a production run continues on
        return True

    def run(self, ctx):
        p = ctx.params
        rehearsal = ctx.rehearsal
        existing = Clone.objects.filter(rehearsal=rehearsal).exclude(status=Clone.Status.DESTROYED).first()
        if existing is not None:
            raise StepFailed(f"this rehearsal already has a clone ({existing}, {existing.get_status_display()}); "
                             f"destroy it first")
        Clone.objects.filter(rehearsal=rehearsal).delete()  # destroyed ones: keep only the new records
        host = rehearsal.incident.production_host
        hostname = p.get("hostname") or f"{host.name}-clone-{rehearsal.pk}"
        key_path, pub = worker_keypair()
        hv = rehearsal.hypervisor
        workbench = Clone.objects.create(rehearsal=rehearsal, hypervisor=hv, status=Clone.Status.BUILDING,
                                         domain_name=domain_name(rehearsal, hostname), key_path=str(key_path))
        stand_in = None
        if rehearsal.is_dress_rehearsal:
            # the stand-in plays production, so every step aimed at production acts on it
            stand_in = Clone.objects.create(
                rehearsal=rehearsal, hypervisor=hv, role=Clone.Role.STAND_IN, status=Clone.Status.BUILDING,
                domain_name=domain_name(rehearsal, f"{host.name}-standin"), key_path=str(key_path))
        hooks = {"pre_command": p.get("pre_command"), "post_command": p.get("post_command")}
        if rehearsal.is_dress_rehearsal:
            # The hooks are commands on the real production host (flush, checkpoint, pause...):
            # a dress rehearsal only reads production, so it copies without them.
            for name, command in hooks.items():
                if command:
                    ctx.emitter.log(f"{name} {command!r} is not run: a dress rehearsal does not change the real "
                                    f"production host, so this copy is crash-consistent, not quiesced", "info")
            hooks = {"pre_command": None, "post_command": None}
        options = CloneOptions(
            name=workbench.domain_name, hostname=hostname, rehearsal_id=str(rehearsal.pk),
            pre_command=hooks["pre_command"], post_command=hooks["post_command"], exclude=p["exclude"],
            disable_services=p["disable_services"], memory_mib=p["memory_mib"], vcpus=p["vcpus"],
            headroom_percent=p["headroom_percent"], boot_timeout=p["boot_timeout"],
            domain_type=hv.domain_type or None, worker_public_key=pub, worker_key_path=str(key_path),
            stand_in=StandInOptions(name=stand_in.domain_name, hostname=stand_in_hostname(host.name, rehearsal))
            if stand_in else None)
        clones = [c for c in (workbench, stand_in) if c is not None]
        try:
            # the copy reads the real production host, in both modes: it is the point of a clone
            result = clone_host(ctx.real_production("read"), hypervisor_uri=hv.libvirt_uri,
                                storage_dir=hv.storage_dir, options=options, emitter=ctx.emitter,
                                cancel=ctx.is_cancelled)
        except (CloneError, HypervisorError, SSHError, OSError) as exc:
            for c in clones:
                c.status = Clone.Status.FAILED
                c.save(update_fields=["status"])
            raise StepFailed(f"clone failed: {exc}") from exc
        point_in_time = dt.datetime.fromtimestamp(result.point_in_time, tz=dt.timezone.utc)
        _record(workbench, result.booted, disk_path=result.disk_path, staging_dir=result.staging_dir,
                address=result.ssh_host, port=result.ssh_port, user=result.user, host_key=result.host_key,
                point_in_time=point_in_time, consistency=result.consistency)
        if stand_in is not None and result.stand_in:
            s = result.stand_in
            _record(stand_in, s["booted"], disk_path=s["disk_path"], address=s["ssh_host"], port=s["ssh_port"],
                    user=s["user"], host_key=s["host_key"], point_in_time=point_in_time,
                    consistency=result.consistency)
        out = result.to_dict()
        if not result.booted:
            raise StepFailed(f"the clone was built but not booted: {hv.libvirt_uri} cannot run VMs "
                             f"(libvirt's test driver); use a real hypervisor to rehearse", out)
        ctx.emitter.log(f"workbench {workbench.domain_name} is up: ssh {workbench.user}@{workbench.address}:"
                        f"{workbench.port}, host key pinned", "info")
        if stand_in is not None:
            ctx.emitter.log(f"stand-in of production {stand_in.domain_name} is up: ssh {stand_in.user}@"
                            f"{stand_in.address}:{stand_in.port}, host key pinned; steps aimed at production "
                            f"act on it in this dress rehearsal", "info")
        return out


def stand_in_hostname(host_name: str, rehearsal) -> str:
    safe = re.sub(r"[^A-Za-z0-9-]", "-", host_name)[:40].strip("-") or "production"
    return f"{safe}-standin-{rehearsal.pk}"


def _record(clone: Clone, booted: bool, **fields) -> None:
    for name, value in fields.items():
        setattr(clone, name, value)
    clone.status = Clone.Status.RUNNING if booted else Clone.Status.FAILED
    clone.save()
