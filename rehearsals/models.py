"""Rehearsal runs and everything they record: step runs and their events,
approvals, the clone, the diff's findings, the sync-back journal and the audit
timeline of the incident.

A Rehearsal is one run of one runbook version, in one of two modes: a dress
rehearsal (mode ``rehearsal``) or the production run.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from incidents.models import Incident
from inventory.models import Hypervisor
from runbooks.models import Runbook, StepSpec
from workers.engines.endpoint import Endpoint
from workers.engines.vocabulary import CHANGE_LABELS, VERDICT_LABELS


class Rehearsal(models.Model):
    class Mode(models.TextChoices):
        REHEARSAL = "rehearsal", "dress rehearsal (production is not changed)"
        PRODUCTION = "production", "production run (the real repair)"

    class Status(models.TextChoices):
        PENDING = "pending", "Not started"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        CANCELLED = "cancelled", "Cancelled"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="rehearsals")
    runbook = models.ForeignKey(Runbook, on_delete=models.PROTECT, related_name="rehearsals")
    hypervisor = models.ForeignKey(Hypervisor, on_delete=models.PROTECT, related_name="rehearsals")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.REHEARSAL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    keep_clone = models.BooleanField(default=False, help_text="Keep the clone VM when the rehearsal closes.")
    continues_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="production_runs",
        help_text="The succeeded dress rehearsal whose repaired workbench this production run continues from.")
    override_reason = models.TextField(
        blank=True, help_text="Why this production run starts without a succeeded dress rehearsal.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("run_production", "Can start a production run (writes the real production host)")]

    def __str__(self) -> str:
        return f"{self.kind_label} #{self.pk} of {self.runbook} for {self.incident}"

    @property
    def is_dress_rehearsal(self) -> bool:
        return self.mode == self.Mode.REHEARSAL

    @property
    def kind_label(self) -> str:
        return "Dress rehearsal" if self.is_dress_rehearsal else "Production run"

    def get_absolute_url(self) -> str:
        return reverse("rehearsals:detail", args=[self.pk])

    @property
    def group_name(self) -> str:
        return f"rehearsal-{self.pk}"

    @property
    def is_terminal(self) -> bool:
        return self.status in {self.Status.SUCCEEDED, self.Status.CANCELLED}

    def latest_runs(self) -> dict[int, "StepRun"]:
        """step spec id -> its latest attempt."""
        latest: dict[int, StepRun] = {}
        for run in self.step_runs.order_by("step_id", "attempt"):
            latest[run.step_id] = run
        return latest


class StepRun(models.Model):
    class Status(models.TextChoices):
        PREPARING = "preparing", "Preparing the preview"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        AWAITING_CONFIRMATION = "awaiting_confirmation", "Awaiting confirmation"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"
        CANCELLED = "cancelled", "Cancelled"
        CARRIED = "carried", "Done in the dress rehearsal"

    ACTIVE = {Status.PREPARING, Status.QUEUED, Status.RUNNING, Status.AWAITING_APPROVAL,
              Status.AWAITING_CONFIRMATION}
    DONE = {Status.SUCCEEDED, Status.SKIPPED, Status.CARRIED}

    rehearsal = models.ForeignKey(Rehearsal, on_delete=models.CASCADE, related_name="step_runs")
    step = models.ForeignKey(StepSpec, on_delete=models.PROTECT, related_name="runs")
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+", help_text="Who ran (or retried) this attempt.")
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    progress = models.JSONField(default=dict, blank=True, help_text="Latest progress event payload.")
    task_id = models.CharField(max_length=64, blank=True)
    last_seq = models.PositiveBigIntegerField(default=0, help_text="Highest StepEvent.seq allocated.")
    worker = models.CharField(max_length=200, blank=True,
                              help_text="The Celery worker (its node name) that picked this attempt up.")
    heartbeat_at = models.DateTimeField(null=True, blank=True,
                                        help_text="When the worker last renewed its lease.")
    lease_expires_at = models.DateTimeField(
        null=True, blank=True, db_index=True,
        help_text="While running: the worker's lease. Past it, the reaper declares the worker lost.")
    carried_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="carried_into",
        help_text="Status carried: the dress rehearsal's attempt whose work on the workbench this run reuses.")

    class Meta:
        ordering = ["rehearsal", "step__position", "attempt"]
        constraints = [models.UniqueConstraint(fields=["rehearsal", "step", "attempt"], name="steprun_attempt")]

    def __str__(self) -> str:
        return f"{self.step} attempt {self.attempt}: {self.status}"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


# A log line longer than this is sent (over the WebSocket and the log API) cut to this many characters, with its
# full length; the whole line is fetched on its own (``…/log/lines/<seq>/``).
LINE_PREVIEW_CHARS = 16 * 1024


class StepEvent(models.Model):
    """One engine event. ``seq`` increases by one per StepRun with no gaps.

    A log event's text and stream are also in their own columns (``line``, ``stream``), so the log viewer's
    search is a ``LIKE`` over one text column, filtered by the (step_run, seq) index, and a page of lines can
    be read with each line cut in SQL, without loading a megabyte line's JSON."""

    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    ts = models.DateTimeField()
    kind = models.CharField(max_length=16)
    payload = models.JSONField(default=dict)
    line = models.TextField(blank=True, default="", help_text="A log event's text (empty for other kinds).")
    stream = models.CharField(max_length=8, blank=True, default="", help_text="A log event's stream.")

    class Meta:
        ordering = ["step_run", "seq"]
        constraints = [models.UniqueConstraint(fields=["step_run", "seq"], name="stepevent_seq")]

    @classmethod
    def of(cls, step_run_id: int, seq: int, ts, kind: str, payload: dict) -> "StepEvent":
        """A row for one event, its log columns filled from the payload."""
        line, stream = "", ""
        if kind == "log":
            line, stream = str(payload.get("line", "")), str(payload.get("stream", ""))[:8]
        return cls(step_run_id=step_run_id, seq=seq, ts=ts, kind=kind, payload=payload, line=line, stream=stream)

    def as_frame(self) -> dict:
        payload = self.payload
        if self.kind == "log":
            text = payload.get("line", "")
            if isinstance(text, str) and len(text) > LINE_PREVIEW_CHARS:
                payload = dict(payload, line=text[:LINE_PREVIEW_CHARS], length=len(text), truncated=True)
        return {"type": "event", "step_run": self.step_run_id, "seq": self.seq, "ts": self.ts.isoformat(),
                "kind": self.kind, "payload": payload}


class Approval(models.Model):
    class Decision(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="approvals")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices, default=Decision.PENDING)
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)
    plan = models.JSONField(default=dict, blank=True,
                            help_text="What was approved (e.g. a sync-back preview); a changed plan needs a new approval.")

    class Meta:
        ordering = ["-requested_at"]


class Clone(models.Model):
    """The VM a rehearsal cloned production into, and how to reach it.

    Later steps with target=clone connect to ``endpoint()``; the pinned key is
    the one generated when the clone was fixed up, never a key learned later.
    """

    class Role(models.TextChoices):
        WORKBENCH = "workbench", "workbench (where the repair is rehearsed)"
        STAND_IN = "stand_in", "stand-in of production"

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        RUNNING = "running", "Running"
        FAILED = "failed", "Failed"
        DESTROYED = "destroyed", "Destroyed"

    rehearsal = models.ForeignKey(Rehearsal, on_delete=models.CASCADE, related_name="clones")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.WORKBENCH)
    hypervisor = models.ForeignKey(Hypervisor, on_delete=models.PROTECT, related_name="clones")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BUILDING)
    domain_name = models.CharField(max_length=200, blank=True)
    disk_path = models.CharField(max_length=500, blank=True)
    staging_dir = models.CharField(max_length=500, blank=True)
    address = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(default=22)
    user = models.CharField(max_length=64, default="root")
    key_path = models.CharField(max_length=500, blank=True)
    host_key = models.TextField(blank=True)
    point_in_time = models.DateTimeField(null=True, blank=True,
                                         help_text="When the copy of production started: newer production data "
                                                   "is not in the clone.")
    consistency = models.JSONField(default=dict, blank=True,
                                   help_text="Files that changed or vanished during the copy.")
    keep = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rehearsal", "role"], name="clone_role_per_rehearsal")]

    def __str__(self) -> str:
        return self.domain_name or f"{self.get_role_display()} of rehearsal #{self.rehearsal_id}"

    @property
    def label(self) -> str:
        return "stand-in of production" if self.role == self.Role.STAND_IN else "workbench clone"

    def endpoint(self) -> Endpoint:
        return Endpoint(host=self.address, port=self.port, user=self.user, key_path=self.key_path or None,
                        host_key=self.host_key, label=f"{self.label} {self}")


class SyncJournalEntry(models.Model):
    """Per-file progress of a sync-back run, mirrored from the journal the agent keeps on
    production. A re-run resumes by content; this table is what people read."""

    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="sync_journal")
    run_id = models.CharField(max_length=64)
    path = models.TextField(blank=True)
    state = models.CharField(max_length=32)
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step_run", "at", "pk"]
        verbose_name_plural = "sync journal entries"


class TimelineEntry(models.Model):
    """One audited action: who did what, when. Written by every state change.

    It lives here, above incidents, because it names rehearsals and step runs."""

    incident = models.ForeignKey("incidents.Incident", null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="timeline",
                                 help_text="Empty for actions on a hypervisor that no incident owns.")
    rehearsal = models.ForeignKey(Rehearsal, null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="timeline")
    step_run = models.ForeignKey(StepRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
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

    # One vocabulary, the engines': the diff's categories and the verify tool's verdicts.
    Change = models.TextChoices("Change", [(name.upper(), (name, label)) for name, label in CHANGE_LABELS.items()])
    Verdict = models.TextChoices("Verdict", [("NONE", ("", "—"))] + [
        (name.upper(), (name, label)) for name, label in VERDICT_LABELS.items()])

    rehearsal = models.ForeignKey(Rehearsal, on_delete=models.CASCADE, related_name="findings")
    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="findings")
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


class OutboxMessage(models.Model):
    """A Celery task decided in a transaction, written in that same transaction and sent after it
    commits (``dispatch``). While the broker cannot take it the row stays unsent, is retried with
    backoff, and its step run shows "waiting for the broker"; nothing decided is lost."""

    task = models.CharField(max_length=100)
    args = models.JSONField(default=list)
    queue = models.CharField(max_length=100)
    step_run = models.ForeignKey(StepRun, null=True, blank=True, on_delete=models.CASCADE, related_name="outbox")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Failed sends so far.")
    next_try_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["sent_at", "next_try_at"], name="outbox_unsent")]

    def __str__(self) -> str:
        return f"{self.task}{self.args} → {self.queue} ({'sent' if self.sent_at else 'unsent'})"

    @property
    def task_id(self) -> str:
        """Deterministic, so a message sent twice (a relay that died after sending) is the same task."""
        return f"outbox-{self.pk}"
