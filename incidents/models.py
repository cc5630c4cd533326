"""Incidents and their lifecycle.

An incident is opened by a person, is *mitigating* while a rehearsal or a
production run is active, *resolved* when a production run re-enables the broken
service, and *closed* by a person. ``move_to`` holds the rule of which change is
allowed; the rehearsals app, which writes the audit timeline, calls it.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone


class Incident(models.Model):
    class Severity(models.TextChoices):
        SEV1 = "sev1", "SEV1 — outage"
        SEV2 = "sev2", "SEV2 — partial outage"
        SEV3 = "sev3", "SEV3 — degraded"
        SEV4 = "sev4", "SEV4 — minor"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        MITIGATING = "mitigating", "Mitigating"
        RESOLVED = "resolved", "Resolved"
        CLOSED = "closed", "Closed"

    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.SEV2)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    production_host = models.ForeignKey("inventory.ProductionHost", on_delete=models.PROTECT,
                                        related_name="incidents")
    broken_service = models.CharField(max_length=100, blank=True,
                                      help_text="The one service that is down; the rest of the host stays in production.")
    restoration_target_minutes = models.PositiveIntegerField(
        null=True, blank=True, verbose_name="restoration target (minutes)",
        help_text="The maintenance window the vendor or the business allows for the real repair; the report "
                  "compares its restoration-time estimate with it.")
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    opened_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    def get_absolute_url(self) -> str:
        return reverse("incidents:detail", args=[self.pk])

    # Which status may follow which, and who may cause it. Mitigating <-> open follows runs
    # starting and ending; resolved comes from a production run; closing is a person's decision.
    TRANSITIONS = {
        Status.OPEN: {Status.MITIGATING, Status.CLOSED},
        Status.MITIGATING: {Status.OPEN, Status.RESOLVED},
        Status.RESOLVED: {Status.MITIGATING, Status.CLOSED},
        Status.CLOSED: set(),
    }

    def can_move_to(self, status: str) -> bool:
        return status in self.TRANSITIONS[self.Status(self.status)]

    def move_to(self, status: str) -> str:
        """Change the status (stamping resolved_at / closed_at); return the old one.
        Raises ValueError for a change the lifecycle does not allow."""
        old = self.status
        if not self.can_move_to(status):
            raise ValueError(f"incident #{self.pk} is {self.get_status_display().lower()}; "
                             f"it cannot become {self.Status(status).label.lower()}")
        now = timezone.now()
        self.status = status
        if status == self.Status.RESOLVED:
            self.resolved_at = now
        elif status == self.Status.CLOSED:
            self.closed_at = now
        elif status == self.Status.MITIGATING:
            self.resolved_at = None
        self.save(update_fields=["status", "resolved_at", "closed_at"])
        return old
