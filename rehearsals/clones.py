"""Clone lifecycle on the Django side: destroy a rehearsal's clone, find leftovers.

These run inside the hypervisor's worker (they need its libvirt and disks);
services queue them, views only show the result.
"""
from __future__ import annotations

from django.utils import timezone

from workers.engines.clone import CloneError
from workers.engines.clone import destroy_clone as destroy_clone_files
from workers.engines.hypervisor import Hypervisor as LibvirtHost

from .models import Clone, Hypervisor


class CloneCleanupError(Exception):
    pass


def destroy_clone(clone: Clone, emitter=None) -> dict:
    """Destroy + undefine the domain and delete its directory (disk, kernel copies, staging)."""
    try:
        removed = destroy_clone_files(clone.hypervisor.libvirt_uri, clone.domain_name,
                                      storage_dir=clone.hypervisor.storage_dir, emitter=emitter)
    except CloneError as exc:
        raise CloneCleanupError(f"could not destroy {clone}: {exc}") from exc
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
    try:
        removed = destroy_clone_files(hypervisor.libvirt_uri, domain_name, storage_dir=hypervisor.storage_dir)
    except CloneError as exc:
        raise CloneCleanupError(str(exc)) from exc
    scan_hypervisor(hypervisor)
    return bool(removed)
