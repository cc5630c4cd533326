from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from .models import Runbook, RunbookLocked, StepSpec


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

    def has_change_permission(self, request, obj=None):
        """A version that has run is shown read-only: every field, its check sets and its steps."""
        if obj is not None and obj.is_locked:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.is_locked:
            return False
        return super().has_delete_permission(request, obj)

    def delete_queryset(self, request, queryset):
        locked = [str(rb) for rb in queryset if rb.is_locked]
        if locked:
            self.message_user(request, f"Not deleted: {', '.join(locked)} have run and are immutable",
                              messages.ERROR)
        super().delete_queryset(request, queryset.filter(locked_at__isnull=True))

    def save_formset(self, request, form, formset, change):
        try:
            super().save_formset(request, form, formset, change)
        except (RunbookLocked, ValidationError) as exc:
            self.message_user(request, str(exc), messages.ERROR)
