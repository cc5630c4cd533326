from django.contrib import admin

from .models import Approval, Rehearsal, StepRun, TimelineEntry


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


@admin.register(TimelineEntry)
class TimelineEntryAdmin(admin.ModelAdmin):
    """The audit trail is read-only, here as everywhere."""
    list_display = ["at", "incident", "rehearsal", "actor", "action", "message"]
    list_filter = ["action"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
