from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from .models import Approval, Hypervisor, ProductionHost, Rehearsal, Runbook, RunbookLocked, StepRun, StepSpec


@admin.register(ProductionHost)
class ProductionHostAdmin(admin.ModelAdmin):
    list_display = ["name", "address", "port", "user", "host_key_fingerprint"]


@admin.register(Hypervisor)
class HypervisorAdmin(admin.ModelAdmin):
    list_display = ["name", "libvirt_uri", "queue", "storage_dir", "domain_type"]


class StepSpecInline(admin.StackedInline):
    model = StepSpec
    extra = 0
    ordering = ["position"]

    def has_change_permission(self, request, obj=None):
        return obj is None or not obj.is_locked

    has_add_permission = has_delete_permission = has_change_permission


@admin.register(Runbook)
class RunbookAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "is_locked", "created_at"]
    inlines = [StepSpecInline]
    actions = ["make_new_version"]

    @admin.action(description="Create a new editable version")
    def make_new_version(self, request, queryset):
        for rb in queryset:
            new = rb.new_version(request.user)
            self.message_user(request, f"Created {new}", messages.SUCCESS)

    def save_formset(self, request, form, formset, change):
        try:
            super().save_formset(request, form, formset, change)
        except (RunbookLocked, ValidationError) as exc:
            self.message_user(request, str(exc), messages.ERROR)


class StepRunInline(admin.TabularInline):
    model = StepRun
    extra = 0
    fields = ["step", "attempt", "status", "started_at", "finished_at", "error"]
    readonly_fields = fields
    can_delete = False


@admin.register(Rehearsal)
class RehearsalAdmin(admin.ModelAdmin):
    list_display = ["id", "incident", "runbook", "hypervisor", "mode", "status", "created_at"]
    inlines = [StepRunInline]
    readonly_fields = ["status", "started_at", "finished_at"]


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ["step_run", "requested_by", "approver", "decision", "decided_at"]
    readonly_fields = ["step_run", "requested_by", "approver", "decision", "decided_at", "note", "plan"]
