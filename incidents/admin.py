from django.contrib import admin

from .models import Incident


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "severity", "status", "production_host", "opened_at"]
    list_filter = ["severity", "status"]
    readonly_fields = ["status", "opened_by", "resolved_at", "closed_at"]
