from django.contrib import admin

from .models import Hypervisor, ProductionHost


@admin.register(ProductionHost)
class ProductionHostAdmin(admin.ModelAdmin):
    list_display = ["name", "address", "port", "user", "host_key_fingerprint"]


@admin.register(Hypervisor)
class HypervisorAdmin(admin.ModelAdmin):
    list_display = ["name", "libvirt_uri", "queue", "storage_dir", "domain_type"]
