from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied

from accounts.roles import can_administer
from workers.engines.endpoint import SSHError, fingerprint
from workers.engines.ssh import scan_host_key

from .models import Hypervisor, ProductionHost


@admin.register(ProductionHost)
class ProductionHostAdmin(admin.ModelAdmin):
    """The pinned host key is set when a host is added and changed only by the explicit, audited
    "Re-pin host key" action: the edit form shows it read-only, so no edit replaces it in passing."""

    list_display = ["name", "address", "port", "user", "host_key_fingerprint"]
    actions = ["repin_host_key"]

    def get_readonly_fields(self, request, obj=None):
        return ["host_key", "host_key_fingerprint"] if obj is not None else []

    @admin.action(description="Re-pin host key (fetch the key the host presents now; check its fingerprint "
                              "out of band)", permissions=["change"])
    def repin_host_key(self, request, queryset):
        if not can_administer(request.user):
            raise PermissionDenied("re-pinning a host key needs the admins role")
        for host in queryset:
            try:
                new_key = scan_host_key(host.address, host.port)
            except SSHError as exc:
                self.message_user(request, f"{host}: could not fetch its host key: {exc}", messages.ERROR)
                continue
            old = host.host_key_fingerprint
            if fingerprint(new_key) == old:
                self.message_user(request, f"{host}: the host still presents the pinned key {old}", messages.INFO)
                continue
            repin(host, new_key)
            self.message_user(request, f"{host}: host key re-pinned {old} → {host.host_key_fingerprint}",
                              messages.WARNING)


def repin(host: ProductionHost, new_key: str) -> None:
    """Replace the pinned key; the audit timeline records it as a re-pin (old → new fingerprint)."""
    host.host_key = new_key
    host.full_clean()
    host._audit_action = "inventory.host_key_repinned"
    host.save(update_fields=["host_key"])


@admin.register(Hypervisor)
class HypervisorAdmin(admin.ModelAdmin):
    list_display = ["name", "libvirt_uri", "queue", "storage_dir", "domain_type"]
