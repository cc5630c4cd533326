"""The incident report of one rehearsal or production run: the narrative ops write
(summary, lessons, action items), its review state, and the published versions.

Everything else in a report is generated from what the run recorded (``reports.data``).
Publishing freezes a version: the data snapshot and the HTML rendered from it are stored,
so a published version reads the same after the underlying rows change; editing the
report afterwards and publishing again makes the next version.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from rehearsals.models import Rehearsal


class Report(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        IN_REVIEW = "in_review", "In review"
        PUBLISHED = "published", "Published"

    rehearsal = models.OneToOneField(Rehearsal, on_delete=models.CASCADE, related_name="report")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    summary = models.TextField(blank=True, help_text="Empty: the summary generated from the facts.")
    went_well = models.TextField(blank=True)
    went_wrong = models.TextField(blank=True)
    got_lucky = models.TextField(blank=True, verbose_name="where we got lucky")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Report of run #{self.rehearsal_id}"

    def get_absolute_url(self) -> str:
        return reverse("reports:rehearsal", args=[self.rehearsal_id])

    def latest_version(self) -> "ReportVersion | None":
        return self.versions.order_by("-number").first()


class ActionItem(models.Model):
    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="action_items")
    text = models.CharField(max_length=300)
    owner = models.CharField(max_length=100, blank=True)
    due = models.DateField(null=True, blank=True)
    done = models.BooleanField(default=False)

    class Meta:
        ordering = ["report", "pk"]


class ReportVersion(models.Model):
    """One published version: what was published, frozen."""

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    snapshot = models.JSONField(help_text="Every fact the report shows, as published.")
    html = models.TextField(help_text="The report rendered from the snapshot when it was published (UTC).")
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    published_at = models.DateTimeField(auto_now_add=True)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["report", "number"]
        constraints = [models.UniqueConstraint(fields=["report", "number"], name="reportversion_number")]

    def __str__(self) -> str:
        return f"{self.report} v{self.number}"
