"""Inventory, runbooks and rehearsal runs.

A Runbook row is one *version*: rows sharing ``name`` form its history. Once a
version has been used by a Rehearsal it is immutable (its steps cannot change);
editing means ``new_version()``.
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.urls import reverse

from workers.engines.ssh import Endpoint, fingerprint, parse_public_key


class ProductionHost(models.Model):
    name = models.CharField(max_length=100, unique=True)
    address = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=22)
    user = models.CharField(max_length=64, default="root")
    key_path = models.CharField(max_length=500, blank=True,
                                help_text="Private key the workers use (path on the worker hosts).")
    host_key = models.TextField(help_text="Pinned public host key, e.g. 'ssh-ed25519 AAAA...'. "
                                          "Connections presenting another key are refused.")
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            parse_public_key(self.host_key)
        except ValueError as exc:
            raise ValidationError({"host_key": str(exc)})

    @property
    def host_key_fingerprint(self) -> str:
        try:
            return fingerprint(self.host_key)
        except Exception:
            return "(invalid key)"

    def endpoint(self) -> Endpoint:
        return Endpoint(host=self.address, port=self.port, user=self.user, key_path=self.key_path or None,
                        host_key=self.host_key, label=f"production {self.name}")


class Hypervisor(models.Model):
    name = models.CharField(max_length=100, unique=True)
    libvirt_uri = models.CharField(max_length=255, default="qemu:///system")
    queue = models.CharField(max_length=100, unique=True,
                             help_text="Celery queue the worker on this host consumes.")
    storage_dir = models.CharField(max_length=500, help_text="Where clone disks and staging trees live.")
    domain_type = models.CharField(max_length=8, blank=True, choices=[("", "auto-detect"), ("kvm", "kvm"),
                                                                      ("qemu", "qemu (TCG)")])
    notes = models.TextField(blank=True)
    last_scan = models.JSONField(default=dict, blank=True,
                                 help_text="Clone domains libvirt reported at the last scan (leftovers check).")
    scanned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_test_driver(self) -> bool:
        return self.libvirt_uri.startswith("test:")


class Runbook(models.Model):
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField(default=1)
    description = models.TextField(blank=True)
    check_sets = models.JSONField(default=dict, blank=True,
                                  help_text='Reusable acceptance checks: {"name": [check, ...]}; a check step '
                                            'names one with "check_set".')
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="runbook_name_version")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def is_locked(self) -> bool:
        """A version that has run is immutable: the report must show what really ran."""
        return self.pk is not None and self.rehearsals.exists()

    @transaction.atomic
    def new_version(self, user=None) -> "Runbook":
        latest = Runbook.objects.filter(name=self.name).order_by("-version").first()
        copy = Runbook.objects.create(name=self.name, version=latest.version + 1,
                                      description=self.description, check_sets=self.check_sets, created_by=user)
        for spec in self.steps.all():
            StepSpec.objects.create(runbook=copy, position=spec.position, kind=spec.kind, title=spec.title,
                                    params=spec.params, target=spec.target, needs_approval=spec.needs_approval,
                                    estimated_seconds=spec.estimated_seconds)
        return copy


class RunbookLocked(ValidationError):
    pass


class StepSpec(models.Model):
    class Target(models.TextChoices):
        CLONE = "clone", "clone"
        PRODUCTION = "production", "production"

    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=32)
    title = models.CharField(max_length=200)
    params = models.JSONField(default=dict, blank=True)
    target = models.CharField(max_length=16, choices=Target.choices, default=Target.PRODUCTION)
    needs_approval = models.BooleanField(default=False)
    estimated_seconds = models.PositiveIntegerField(default=60, help_text="Estimated duration, for the report.")

    class Meta:
        ordering = ["runbook", "position"]
        constraints = [models.UniqueConstraint(fields=["runbook", "position"], name="stepspec_position")]

    def __str__(self) -> str:
        return f"{self.position}. {self.title} [{self.kind}]"

    def clean(self) -> None:
        from .steps import registry  # local: steps import models

        errors = registry.validate(self.kind, self.params, self.target, runbook=self.runbook)
        if errors:
            raise ValidationError({"params": errors})

    def save(self, *args, **kwargs) -> None:
        if self.runbook.is_locked:
            raise RunbookLocked(f"{self.runbook} has already run and is immutable; create a new version to edit it")
        from .steps import registry

        # Typed params are validated and normalised (defaults filled in) on every save.
        self.params = registry.clean_params(self.kind, self.params, self.target, runbook=self.runbook)
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self.runbook.is_locked:
            raise RunbookLocked(f"{self.runbook} has already run and is immutable; create a new version to edit it")
        return super().delete(*args, **kwargs)


class Rehearsal(models.Model):
    class Mode(models.TextChoices):
        REHEARSAL = "rehearsal", "rehearsal (on a clone)"
        PRODUCTION = "production", "production (the real repair)"

    class Status(models.TextChoices):
        PENDING = "pending", "Not started"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        CANCELLED = "cancelled", "Cancelled"

    incident = models.ForeignKey("incidents.Incident", on_delete=models.CASCADE, related_name="rehearsals")
    runbook = models.ForeignKey(Runbook, on_delete=models.PROTECT, related_name="rehearsals")
    hypervisor = models.ForeignKey(Hypervisor, on_delete=models.PROTECT, related_name="rehearsals")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.REHEARSAL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    keep_clone = models.BooleanField(default=False, help_text="Keep the clone VM when the rehearsal closes.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Rehearsal #{self.pk} of {self.runbook} for {self.incident}"

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

    ACTIVE = {Status.PREPARING, Status.QUEUED, Status.RUNNING, Status.AWAITING_APPROVAL,
              Status.AWAITING_CONFIRMATION}
    DONE = {Status.SUCCEEDED, Status.SKIPPED}

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


class StepEvent(models.Model):
    """One engine event. ``seq`` increases by one per StepRun with no gaps."""

    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    ts = models.DateTimeField()
    kind = models.CharField(max_length=16)
    payload = models.JSONField(default=dict)

    class Meta:
        ordering = ["step_run", "seq"]
        constraints = [models.UniqueConstraint(fields=["step_run", "seq"], name="stepevent_seq")]

    def as_frame(self) -> dict:
        return {"type": "event", "step_run": self.step_run_id, "seq": self.seq, "ts": self.ts.isoformat(),
                "kind": self.kind, "payload": self.payload}


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

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        RUNNING = "running", "Running"
        FAILED = "failed", "Failed"
        DESTROYED = "destroyed", "Destroyed"

    rehearsal = models.OneToOneField(Rehearsal, on_delete=models.CASCADE, related_name="clone")
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

    def __str__(self) -> str:
        return self.domain_name or f"clone of rehearsal #{self.rehearsal_id}"

    def endpoint(self) -> Endpoint:
        return Endpoint(host=self.address, port=self.port, user=self.user, key_path=self.key_path or None,
                        host_key=self.host_key, label=f"clone {self}")


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
