"""Clone lifecycle on the Django side: destroy a rehearsal's clone, find leftovers.

These run inside the hypervisor's worker (they need its libvirt and disks);
services queue them, views only show the result.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from django.utils import timezone

from workers.engines.hypervisor import Hypervisor as LibvirtHost
from workers.engines.hypervisor import HypervisorError

from .models import Clone, Hypervisor


class CloneCleanupError(Exception):
    pass


def destroy_clone(clone: Clone, emitter=None) -> dict:
    """Destroy + undefine the domain, delete its disk, serial log and staging tree."""
    removed: list[str] = []
    try:
        with LibvirtHost(clone.hypervisor.libvirt_uri, emitter=emitter) as hv:
            if clone.domain_name and hv.destroy(clone.domain_name, remove_disk=True, remove_serial_log=True):
                removed.append(f"domain {clone.domain_name}")
    except HypervisorError as exc:
        raise CloneCleanupError(f"could not destroy {clone}: {exc}") from exc
    for path in (clone.disk_path, clone.staging_dir):
        if path and Path(path).exists():
            if Path(path).is_dir():
                shutil.rmtree(path)
            else:
                Path(path).unlink()
            removed.append(path)
    clone.status = Clone.Status.DESTROYED
    clone.destroyed_at = timezone.now()
    clone.save(update_fields=["status", "destroyed_at"])
    return {"removed": removed}


def scan_hypervisor(hypervisor: Hypervisor) -> list[dict]:
    """Record every understudy domain libvirt knows on this hypervisor, marking the ones
    no live Clone row accounts for (leftovers someone must clean up)."""
    live = set(Clone.objects.filter(hypervisor=hypervisor).exclude(status=Clone.Status.DESTROYED)
               .values_list("domain_name", flat=True))
    with LibvirtHost(hypervisor.libvirt_uri) as hv:
        domains = [{"name": d.name, "state": d.state, "rehearsal": d.rehearsal_id,
                    "disk": str(d.disk_path) if d.disk_path else None, "leftover": d.name not in live}
                   for d in hv.list_clones()]
    hypervisor.last_scan = {"domains": domains}
    hypervisor.scanned_at = timezone.now()
    hypervisor.save(update_fields=["last_scan", "scanned_at"])
    return domains


def destroy_leftover(hypervisor: Hypervisor, domain_name: str) -> bool:
    if Clone.objects.filter(hypervisor=hypervisor, domain_name=domain_name).exclude(
            status=Clone.Status.DESTROYED).exists():
        raise CloneCleanupError(f"{domain_name} belongs to a live rehearsal; destroy it from its rehearsal")
    with LibvirtHost(hypervisor.libvirt_uri) as hv:
        gone = hv.destroy(domain_name, remove_disk=True, remove_serial_log=True)
    scan_hypervisor(hypervisor)
    return gone
