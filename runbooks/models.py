"""Runbooks: versioned procedures made of typed steps.

A Runbook row is one *version*: rows sharing ``name`` form its history. Once a
version has been used by a rehearsal it is immutable (its steps cannot change);
editing means ``new_version()``. Step parameters are validated against the
step kind's schema (``runbooks.kinds.registry``) on every save.
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from .kinds import registry


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
    locked_at = models.DateTimeField(null=True, blank=True,
                                     help_text="When a rehearsal first used this version; from then on it is "
                                               "immutable, so the report shows what really ran.")

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="runbook_name_version")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def is_locked(self) -> bool:
        """A version that has run is immutable: the report must show what really ran."""
        if self.locked_at is not None:
            return True
        # Another instance (the rehearsal's) may have locked it since this one was loaded.
        return self.pk is not None and Runbook.objects.filter(pk=self.pk, locked_at__isnull=False).exists()

    IMMUTABLE_FIELDS = ("name", "version", "description", "check_sets", "created_by_id")

    def save(self, *args, **kwargs) -> None:
        """A version that has run keeps every field as it ran; ``lock()`` itself writes with an UPDATE."""
        if self.pk is not None:
            stored = Runbook.objects.filter(pk=self.pk, locked_at__isnull=False).values(
                *self.IMMUTABLE_FIELDS, "locked_at").first()
            if stored is not None:
                changed = [f.removesuffix("_id") for f in self.IMMUTABLE_FIELDS if stored[f] != getattr(self, f)]
                if changed or self.locked_at != stored["locked_at"]:
                    raise RunbookLocked(f"{self} has already run and is immutable "
                                        f"({', '.join(changed) or 'locked_at'} would change); "
                                        "create a new version to edit it")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self.is_locked:
            raise RunbookLocked(f"{self} has already run and is immutable; it cannot be deleted")
        return super().delete(*args, **kwargs)

    def lock(self) -> None:
        """Called when a rehearsal starts using this version."""
        if self.locked_at is None:
            self.locked_at = timezone.now()
            Runbook.objects.filter(pk=self.pk, locked_at__isnull=True).update(locked_at=self.locked_at)

    @transaction.atomic
    def new_version(self, user=None) -> "Runbook":
        latest = Runbook.objects.filter(name=self.name).order_by("-version").first()
        copy = Runbook.objects.create(name=self.name, version=latest.version + 1,
                                      description=self.description, check_sets=self.check_sets, created_by=user)
        for spec in self.steps.all():
            StepSpec.objects.create(runbook=copy, position=spec.position, kind=spec.kind, title=spec.title,
                                    params=spec.params, target=spec.target, needs_approval=spec.needs_approval,
                                    estimated_seconds=spec.estimated_seconds, milestone=spec.milestone)
        return copy


class RunbookLocked(ValidationError):
    pass


class StepSpec(models.Model):
    class Target(models.TextChoices):
        CLONE = "clone", "clone"
        PRODUCTION = "production", "production"

    class Milestone(models.TextChoices):
        """What a step's success means for the incident (the report's milestones). When the
        ``service_restored`` step succeeds in a production run, the incident is resolved."""
        NONE = "", "—"
        SERVICE_DISABLED = "service_disabled", "service disabled"
        CLONE_READY = "clone_ready", "clone ready"
        REPAIR_VERIFIED = "repair_verified", "repair verified on the clone"
        SYNCED_BACK = "synced_back", "synced back"
        CAUGHT_UP = "caught_up", "caught up"
        SERVICE_RESTORED = "service_restored", "service re-enabled"

    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=32)
    title = models.CharField(max_length=200)
    params = models.JSONField(default=dict, blank=True)
    target = models.CharField(max_length=16, choices=Target.choices, default=Target.PRODUCTION)
    needs_approval = models.BooleanField(default=False)
    estimated_seconds = models.PositiveIntegerField(default=60, help_text="Estimated duration, for the report.")
    milestone = models.CharField(max_length=24, choices=Milestone.choices, blank=True, default="")

    class Meta:
        ordering = ["runbook", "position"]
        constraints = [models.UniqueConstraint(fields=["runbook", "position"], name="stepspec_position")]

    def __str__(self) -> str:
        return f"{self.position}. {self.title} [{self.kind}]"

    def clean(self) -> None:
        errors = registry.validate(self.kind, self.params, self.target, runbook=self.runbook)
        if errors:
            raise ValidationError({"params": errors})

    def save(self, *args, **kwargs) -> None:
        if self.runbook.is_locked:
            raise RunbookLocked(f"{self.runbook} has already run and is immutable; create a new version to edit it")
        # Typed params are validated and normalised (defaults filled in) on every save.
        self.params = registry.clean_params(self.kind, self.params, self.target, runbook=self.runbook)
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self.runbook.is_locked:
            raise RunbookLocked(f"{self.runbook} has already run and is immutable; create a new version to edit it")
        return super().delete(*args, **kwargs)
