"""What understudy works on: production hosts (with their pinned host keys) and hypervisor hosts."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from workers.engines.endpoint import Endpoint, fingerprint, parse_public_key


class ProductionHost(models.Model):
    name = models.CharField(max_length=100, unique=True)
    address = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=22)
    user = models.CharField(max_length=64, default="root")
    key_path = models.CharField(max_length=500, blank=True,
                                help_text="Private key the workers use (path on the worker hosts).")
    host_key = models.TextField(help_text="Pinned public host key, e.g. 'ssh-ed25519 AAAA...'. "
                                          "Connections presenting another key are refused.")
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            parse_public_key(self.host_key)
        except ValueError as exc:
            raise ValidationError({"host_key": str(exc)})

    @property
    def host_key_fingerprint(self) -> str:
        try:
            return fingerprint(self.host_key)
        except Exception:
            return "(invalid key)"

    def endpoint(self) -> Endpoint:
        return Endpoint(host=self.address, port=self.port, user=self.user, key_path=self.key_path or None,
                        host_key=self.host_key, label=f"production {self.name}")


class Hypervisor(models.Model):
    name = models.CharField(max_length=100, unique=True)
    libvirt_uri = models.CharField(max_length=255, default="qemu:///system")
    queue = models.CharField(max_length=100, unique=True,
                             help_text="Celery queue the worker on this host consumes.")
    storage_dir = models.CharField(max_length=500, help_text="Where clone disks and staging trees live.")
    domain_type = models.CharField(max_length=8, blank=True, choices=[("", "auto-detect"), ("kvm", "kvm"),
                                                                      ("qemu", "qemu (TCG)")])
    notes = models.TextField(blank=True)
    last_scan = models.JSONField(default=dict, blank=True,
                                 help_text="Clone domains libvirt reported at the last scan (leftovers check).")
    scanned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_test_driver(self) -> bool:
        return self.libvirt_uri.startswith("test:")
