"""Incidents and their audit timeline."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse


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
    production_host = models.ForeignKey("rehearsals.ProductionHost", on_delete=models.PROTECT,
                                        related_name="incidents")
    broken_service = models.CharField(max_length=100, blank=True,
                                      help_text="The one service that is down; the rest of the host stays in production.")
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


class TimelineEntry(models.Model):
    """One audited action: who did what, when. Written by every state change."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="timeline")
    rehearsal = models.ForeignKey("rehearsals.Rehearsal", null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="timeline")
    step_run = models.ForeignKey("rehearsals.StepRun", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                              related_name="+", help_text="Empty for actions the system took by itself.")
    action = models.CharField(max_length=40)
    message = models.TextField()
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["at", "pk"]
        verbose_name_plural = "timeline entries"

    def __str__(self) -> str:
        who = self.actor.username if self.actor else "system"
        return f"{self.at:%Y-%m-%d %H:%M:%S} {who} {self.action}: {self.message}"


class Finding(models.Model):
    """One file that differs between the repaired clone and production, and what the
    database's own page checks say about it. Findings with verdict
    ``corrupted_on_production`` are the repair: the default selection for sync-back."""

    class Change(models.TextChoices):
        CHANGED = "changed", "content differs"
        MISSING = "missing_on_production", "missing on production"
        EXTRA = "extra_on_production", "only on production"
        TYPE = "type_changed", "type differs"
        UNREADABLE = "unreadable", "unreadable"

    class Verdict(models.TextChoices):
        CORRUPTED_ON_PRODUCTION = "corrupted_on_production", "corrupted on production, healthy on the clone"
        NEWER_ON_PRODUCTION = "newer_on_production", "healthy on both, newer on production — leave alone"
        CORRUPTED_ON_BOTH = "corrupted_on_both", "corrupted on both — the restore did not fix it"
        CORRUPTED_ON_CLONE_ONLY = "corrupted_on_clone_only", "corrupted on the clone only"
        UNVERIFIED = "changed_unverified", "changed (no verify command)"
        VERIFY_ERROR = "verify_error", "verify tool could not run"
        NONE = "", "—"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="findings")
    rehearsal = models.ForeignKey("rehearsals.Rehearsal", on_delete=models.CASCADE, related_name="findings")
    step_run = models.ForeignKey("rehearsals.StepRun", on_delete=models.CASCADE, related_name="findings")
    path = models.TextField(help_text="Production path, for display (non-UTF-8 bytes escaped).")
    path_b64 = models.TextField(help_text="Exact production path bytes, base64.")
    clone_path_b64 = models.TextField()
    root = models.PositiveIntegerField(default=0)
    rel_b64 = models.TextField(help_text="Path relative to its diff root, base64.")
    change = models.CharField(max_length=32, choices=Change.choices)
    verdict = models.CharField(max_length=32, choices=Verdict.choices, blank=True, default="")
    size_clone = models.BigIntegerField(null=True, blank=True)
    size_production = models.BigIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    differing_chunks = models.JSONField(default=list, blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    drift = models.CharField(max_length=32, blank=True,
                             help_text="Why production changed after the clone was taken (empty: no drift).")
    selected = models.BooleanField(default=False, help_text="Chosen for sync-back.")
    drift_override = models.BooleanField(default=False, help_text="A person accepted overwriting production "
                                                                   "although it changed after the clone.")

    class Meta:
        ordering = ["step_run", "change", "path"]

    def __str__(self) -> str:
        return f"{self.path}: {self.get_change_display()} / {self.get_verdict_display()}"

    @property
    def chunks_differ(self) -> int:
        return len(self.differing_chunks)
