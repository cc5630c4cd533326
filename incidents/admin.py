from django.contrib import admin

from .models import Incident, TimelineEntry


class TimelineInline(admin.TabularInline):
    model = TimelineEntry
    extra = 0
    readonly_fields = ["at", "actor", "action", "message", "rehearsal"]
    can_delete = False


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "severity", "status", "production_host", "opened_at"]
    list_filter = ["severity", "status"]
    inlines = [TimelineInline]
