"""What the API shows of each object, and the inputs of its writes. Plain field lists: every rule about a change
lives in the function the view calls (``transitions``, ``incident_lifecycle``, ``actions``)."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from incidents.models import Incident
from inventory.models import Hypervisor, ProductionHost
from runbooks.kinds import registry
from runbooks.models import Runbook, StepSpec

from ..dispatch import waiting_note
from ..models import Approval, Finding, Rehearsal, StepRun, TimelineEntry
from . import fields

# The database's integer columns: a larger number is a clear 400, not an overflow in the driver.
MAX_POSITIVE_INT = 2**31 - 1


def _username():
    return serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)


class ProductionHostSerializer(fields.ModelSerializer):
    host_key_fingerprint = serializers.CharField(read_only=True,
                                                 help_text="SHA256 fingerprint of the pinned host key.")

    class Meta:
        model = ProductionHost
        fields = ["id", "name", "address", "port", "user", "host_key", "host_key_fingerprint", "notes"]


class HypervisorSerializer(fields.ModelSerializer):
    is_test_driver = serializers.BooleanField(read_only=True, help_text="libvirt's test driver: no VM boots there.")
    last_scan = serializers.JSONField(read_only=True, help_text="Clone domains libvirt reported at the last scan.")

    class Meta:
        model = Hypervisor
        fields = ["id", "name", "libvirt_uri", "queue", "storage_dir", "domain_type", "is_test_driver", "notes",
                  "last_scan", "scanned_at"]


class LeftoverSerializer(serializers.Serializer):
    domain = fields.Text(max_length=200, help_text="A leftover clone domain the last scan listed.")


class StepSpecSerializer(fields.ModelSerializer):
    kind_label = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField()

    class Meta:
        model = StepSpec
        fields = ["id", "position", "kind", "kind_label", "title", "target", "needs_approval", "estimated_seconds",
                  "milestone", "params", "summary"]

    def get_kind_label(self, spec) -> str:
        return registry.get(spec.kind).label

    def get_summary(self, spec) -> str:
        return registry.get(spec.kind).summary(spec.params)


class RunbookSerializer(fields.ModelSerializer):
    is_locked = serializers.SerializerMethodField(help_text="A version that has run is immutable.")
    created_by = _username()

    class Meta:
        model = Runbook
        fields = ["id", "name", "version", "description", "created_by", "created_at", "locked_at", "is_locked"]

    def get_is_locked(self, runbook) -> bool:
        return runbook.locked_at is not None


class RunbookVersionSerializer(fields.ModelSerializer):
    class Meta:
        model = Runbook
        fields = ["id", "version", "created_at", "locked_at"]


class RunbookDetailSerializer(RunbookSerializer):
    steps = StepSpecSerializer(many=True, read_only=True)
    versions = serializers.SerializerMethodField(help_text="Every version of this runbook's name, newest first.")

    class Meta(RunbookSerializer.Meta):
        fields = RunbookSerializer.Meta.fields + ["check_sets", "steps", "versions"]

    def get_versions(self, runbook) -> list[dict]:
        versions = Runbook.objects.filter(name=runbook.name).order_by("-version")
        return RunbookVersionSerializer(versions, many=True).data


class RunbookDocumentSerializer(serializers.Serializer):
    """A runbook as a document (``manage.py runbook export|import``): every error is listed when it is refused."""
    name = serializers.CharField()
    description = serializers.CharField(required=False, allow_blank=True)
    check_sets = serializers.DictField(required=False)
    steps = serializers.ListField(child=serializers.DictField())


class IncidentSerializer(fields.ModelSerializer):
    opened_by = _username()
    restoration_target_minutes = fields.Integer(
        required=False, allow_null=True, min_value=1, max_value=MAX_POSITIVE_INT,
        help_text="The window allowed for the real repair, in minutes.")

    class Meta:
        model = Incident
        fields = ["id", "title", "description", "severity", "status", "production_host", "broken_service",
                  "restoration_target_minutes", "opened_by", "opened_at", "resolved_at", "closed_at"]
        read_only_fields = ["status", "opened_by", "opened_at", "resolved_at", "closed_at"]


class NoteSerializer(serializers.Serializer):
    note = fields.Text(max_length=2000, help_text="Why (it goes on the timeline and into the report).")


class RehearsalSerializer(fields.ModelSerializer):
    created_by = _username()
    production_runs = serializers.PrimaryKeyRelatedField(many=True, read_only=True,
                                                         help_text="Production runs continuing from this one.")
    page = serializers.CharField(source="get_absolute_url", read_only=True, help_text="The rehearsal's page.")

    class Meta:
        model = Rehearsal
        fields = ["id", "incident", "runbook", "hypervisor", "mode", "status", "keep_clone", "continues_from",
                  "override_reason", "production_runs", "created_by", "created_at", "started_at", "finished_at",
                  "page"]


class NewRehearsalSerializer(serializers.Serializer):
    """A dress rehearsal, or a production run (needs the permission rehearsals.run_production and either
    ``continues_from`` — a succeeded dress rehearsal of the same runbook version and host — or an
    ``override_reason``)."""
    incident = fields.PrimaryKey(queryset=Incident.objects.all())
    runbook = fields.PrimaryKey(queryset=Runbook.objects.all())
    hypervisor = fields.PrimaryKey(
        queryset=Hypervisor.objects.all(), required=False, allow_null=True,
        help_text="Where the clones run; a production run continuing from a dress rehearsal uses its hypervisor.")
    mode = serializers.ChoiceField(choices=Rehearsal.Mode.choices, default=Rehearsal.Mode.REHEARSAL)
    keep_clone = fields.Boolean(default=False)
    continues_from = fields.PrimaryKey(queryset=Rehearsal.objects.all(), required=False,
                                                        allow_null=True)
    override_reason = fields.Text(max_length=2000, required=False, allow_blank=True, default="")


class ActionInputSerializer(serializers.Serializer):
    """The inputs of an operator action; which ones it takes depends on the action (see the operation's text).
    A step kind's own actions take more (e.g. a list of finding ids), passed on as they are."""
    step_run = fields.Integer(required=False, min_value=1,
                                        help_text="approve, reject, confirm, retry and a step kind's actions: "
                                                  "the step run (its latest attempt).")
    step = fields.Integer(required=False, min_value=1, help_text="skip: the runbook step to skip.")
    note = fields.Text(required=False, allow_blank=True, max_length=10000,
                                 help_text="approve/reject (optional), confirm, skip, cancel, rollback: why.")


class MessageSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="What happened, for a person to read.")


class ActionResultSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="What happened, for a person to read.")
    state = serializers.DictField(help_text="The rehearsal as its page shows it (GET …/state/).")


class ApprovalSerializer(fields.ModelSerializer):
    rehearsal = serializers.IntegerField(source="step_run.rehearsal_id", read_only=True)
    requested_by = _username()
    approver = _username()

    class Meta:
        model = Approval
        fields = ["id", "rehearsal", "step_run", "requested_by", "requested_at", "approver", "decision",
                  "decided_at", "note", "plan"]


class StepRunSerializer(fields.ModelSerializer):
    step_position = serializers.IntegerField(source="step.position", read_only=True)
    step_title = serializers.CharField(source="step.title", read_only=True)
    kind = serializers.CharField(source="step.kind", read_only=True)
    requested_by = _username()
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    approvals = ApprovalSerializer(many=True, read_only=True)
    waiting_note = serializers.SerializerMethodField()

    class Meta:
        model = StepRun
        fields = ["id", "rehearsal", "step", "step_position", "step_title", "kind", "attempt", "status",
                  "requested_by", "queued_at", "started_at", "finished_at", "duration_seconds", "error", "result",
                  "progress", "last_seq", "carried_from", "approvals", "worker", "heartbeat_at",
                  "lease_expires_at", "waiting_note"]

    @extend_schema_field(serializers.CharField())
    def get_waiting_note(self, run: StepRun) -> str:
        """"waiting for the broker (since …)" while the run's task could not be sent yet; empty otherwise."""
        return waiting_note(run) if run.status in StepRun.ACTIVE else ""


class FindingSerializer(fields.ModelSerializer):
    chunks_differ = serializers.IntegerField(read_only=True)

    class Meta:
        model = Finding
        fields = ["id", "rehearsal", "step_run", "path", "change", "verdict", "size_clone", "size_production",
                  "chunk_count", "chunks_differ", "drift", "selected", "drift_override", "evidence"]


class TimelineEntrySerializer(fields.ModelSerializer):
    actor = _username()

    class Meta:
        model = TimelineEntry
        fields = ["id", "at", "incident", "rehearsal", "step_run", "actor", "action", "message"]
