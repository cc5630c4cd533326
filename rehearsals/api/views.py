"""The REST API's endpoints for incidents, the inventory, runbooks and runs: thin viewsets. Reads are querysets;
every change calls the function the pages and the WebSocket call — ``incident_lifecycle``, ``transitions``,
``actions.perform`` (the one table of operator actions) — which checks the role and the state and writes the
timeline. Their refusals become HTTP in ``understudy/api/errors.py`` (409 refused now, 400 a wrong input,
403 the role).

Not here: a step run's events and log (``step-runs/<id>/events/``, ``…/log/…``), which have their own module.
"""
from __future__ import annotations

from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError, PermissionDenied, ValidationError
from rest_framework.response import Response

from accounts.roles import require_operator
from incidents.models import Incident
from inventory.models import Hypervisor, ProductionHost
from runbooks.documents import InvalidRunbook, import_runbook, runbook_to_dict
from runbooks.models import Runbook

from .. import actions, incident_lifecycle, transitions
from ..models import Approval, Finding, Rehearsal, StepRun, TimelineEntry
from ..state import rehearsal_state
from . import serializers as s

MAX_ID = 2**63 - 1


def _id_filter(help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text=help_text)


def _query(view, filters: type[serializers.Serializer]) -> dict:
    """The query string's filters, checked by ``filters``: a wrong or empty value is a 400 that says so (an
    empty one would otherwise be read as "no filter")."""
    params = filters(data=view.request.query_params)
    given = view.request.query_params
    empty = {name: ["must not be empty"] for name in params.fields if name in given and given[name] == ""}
    if empty:
        raise ValidationError(empty)
    params.is_valid(raise_exception=True)
    return {k: v for k, v in params.validated_data.items() if v is not None}


def _filtered(view, queryset, filters: type[serializers.Serializer], **lookups):
    """``queryset`` narrowed by the query string (``lookups`` maps a filter to its field path when they differ)."""
    if view.action != "list":
        return queryset
    return queryset.filter(**{lookups.get(k, k): v for k, v in _query(view, filters).items()})


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise ParseError("the body must be a JSON object")
    return dict(request.data)


# ---------------------------------------------------------------- inventory

class ProductionHostViewSet(viewsets.ReadOnlyModelViewSet):
    """Production hosts with their pinned host keys (changed by admins, in the admin, audited)."""
    queryset = ProductionHost.objects.all()
    serializer_class = s.ProductionHostSerializer


class HypervisorViewSet(viewsets.ReadOnlyModelViewSet):
    """Hypervisor hosts: where clones run (one worker queue each)."""
    queryset = Hypervisor.objects.all()
    serializer_class = s.HypervisorSerializer

    @extend_schema(request=None, responses={202: s.MessageSerializer},
                   summary="Ask the hypervisor's worker to list its clone domains (to find leftovers)")
    @action(detail=True, methods=["post"])
    def scan(self, request, pk=None):
        hypervisor = self.get_object()
        transitions.scan_hypervisor(hypervisor, request.user)
        return Response({"message": f"asked the worker on {hypervisor.queue} to list its clone domains"},
                        status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.LeftoverSerializer, responses={202: s.MessageSerializer},
                   summary="Destroy a leftover clone domain the last scan found")
    @action(detail=True, methods=["post"], url_path="destroy-leftover", url_name="destroy-leftover")
    def destroy_leftover(self, request, pk=None):
        hypervisor = self.get_object()
        body = s.LeftoverSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        transitions.destroy_leftover(hypervisor, body.validated_data["domain"], request.user)
        return Response({"message": f"destroying leftover {body.validated_data['domain']} on {hypervisor}"},
                        status=status.HTTP_202_ACCEPTED)


# ---------------------------------------------------------------- runbooks

class RunbookFilters(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=100, help_text="Every version of this runbook.")


@extend_schema_view(list=extend_schema(parameters=[RunbookFilters]))
class RunbookViewSet(viewsets.ReadOnlyModelViewSet):
    """Runbooks: each row is one version; a version that has run is immutable."""

    def get_queryset(self):
        queryset = Runbook.objects.select_related("created_by")
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("steps")
        return _filtered(self, queryset, RunbookFilters)

    def get_serializer_class(self):
        return s.RunbookDetailSerializer if self.action == "retrieve" else s.RunbookSerializer

    @extend_schema(responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "The runbook version as a document.")},
                   summary="Export a version as a document (the format `manage.py runbook import` reads)")
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        return Response(runbook_to_dict(self.get_object()))

    @extend_schema(request=s.RunbookDocumentSerializer, responses={201: s.RunbookDetailSerializer},
                   summary="Import a document as the next version of its runbook (every error listed if refused)")
    @action(detail=False, methods=["post"], url_path="import", url_name="import")
    def import_document(self, request):
        require_operator(request.user)
        if not request.user.has_perm("runbooks.add_runbook"):   # the admin's rule for new runbook versions
            raise PermissionDenied("adding a runbook version needs the permission runbooks.add_runbook")
        try:
            runbook = import_runbook(_body(request), request.user)
        except InvalidRunbook as exc:
            raise ValidationError({"runbook": exc.errors})   # every error, as `manage.py runbook import` lists them
        return Response(s.RunbookDetailSerializer(runbook).data, status=status.HTTP_201_CREATED)


# ---------------------------------------------------------------- incidents

class IncidentFilters(serializers.Serializer):
    status = serializers.ChoiceField(choices=Incident.Status.choices, required=False)
    production_host = _id_filter("Incidents of this production host.")


@extend_schema_view(list=extend_schema(parameters=[IncidentFilters]))
class IncidentViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Incidents: opened by ops, mitigating while a run is active, resolved by a production run, closed by ops."""
    serializer_class = s.IncidentSerializer

    def get_queryset(self):
        return _filtered(self, Incident.objects.select_related("opened_by"), IncidentFilters)

    def perform_create(self, serializer):
        serializer.instance = incident_lifecycle.open_incident(Incident(**serializer.validated_data),
                                                               self.request.user)

    @extend_schema(request=s.NoteSerializer, responses=s.IncidentSerializer, summary="Close the incident, with a note")
    @action(detail=True, methods=["post"])
    def close(self, request, pk=None):
        body = s.NoteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        incident = incident_lifecycle.close_incident(self.get_object(), request.user,
                                                     note=body.validated_data["note"])
        return Response(s.IncidentSerializer(incident).data)


# ---------------------------------------------------------------- runs

class RehearsalFilters(serializers.Serializer):
    incident = _id_filter("Runs of this incident.")
    status = serializers.ChoiceField(choices=Rehearsal.Status.choices, required=False)
    mode = serializers.ChoiceField(choices=Rehearsal.Mode.choices, required=False)


ACTIONS_TEXT = (
    "One of the operator actions of the rehearsal page (the same table, `rehearsals/actions.py`, the WebSocket "
    "and the HTML forms use): `start`, `advance` (run the next step), `approve` / `reject` (`step_run`, "
    "optional `note`; the requester of an approval cannot decide it), `confirm` (`step_run`, `note`), `retry` "
    "(`step_run`), `skip` (`step`, `note`), `cancel` (optional `note`), `destroy_clone`, `run_for_real` (create "
    "the production run continuing from this succeeded dress rehearsal). A step kind's own actions name the "
    "`step_run` they act on: {kinds}. Starting or creating a production run needs the permission "
    "`rehearsals.run_production`. The work an action queues (a step, a preview, a rollback) runs on the "
    "hypervisor's worker: follow it on the step run's events.")


def _action_names() -> list[str]:
    return list(actions.ACTIONS) + [n for n in actions.kind_actions() if n not in actions.ACTIONS]


@extend_schema_view(list=extend_schema(parameters=[RehearsalFilters]))
class RehearsalViewSet(viewsets.ReadOnlyModelViewSet):
    """Dress rehearsals and production runs of a runbook version for an incident."""
    serializer_class = s.RehearsalSerializer

    def get_queryset(self):
        queryset = Rehearsal.objects.select_related("created_by").prefetch_related("production_runs")
        return _filtered(self, queryset, RehearsalFilters)

    @extend_schema(request=s.NewRehearsalSerializer, responses={201: s.RehearsalSerializer},
                   summary="Create a dress rehearsal or a production run")
    def create(self, request):
        body = s.NewRehearsalSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        rehearsal = transitions.create_rehearsal(
            data["incident"], data["runbook"], data.get("hypervisor"), request.user, mode=data["mode"],
            keep_clone=data["keep_clone"], continues_from=data.get("continues_from"),
            override_reason=data["override_reason"])
        return Response(self.get_serializer(rehearsal).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "The rehearsal as its page shows it: "
                                                   "every step with its latest attempt, clones, findings, timeline.")},
                   summary="The rehearsal's state, as the rehearsal page renders it")
    @action(detail=True, methods=["get"])
    def state(self, request, pk=None):
        return Response(rehearsal_state(self.get_object(), request.user))

    @extend_schema(
        request=s.ActionInputSerializer, responses=s.ActionResultSerializer, summary="Perform an operator action",
        description=ACTIONS_TEXT.format(kinds=", ".join(f"`{n}`" for n in actions.kind_actions()) or "none"),
        parameters=[OpenApiParameter("name", str, OpenApiParameter.PATH, enum=_action_names(),
                                     description="The action.")])
    @action(detail=True, methods=["post"], url_path=r"actions/(?P<name>[^/]+)", url_name="action")
    def act(self, request, pk=None, name=None):
        rehearsal = self.get_object()
        body = _body(request)
        inputs = s.ActionInputSerializer(data=body)
        if not inputs.is_valid():   # the generic inputs' types; one message, as every refusal of an action
            raise ParseError("; ".join(f"{name}: {' '.join(map(str, errors))}"
                                       for name, errors in inputs.errors.items()))
        message = actions.perform(rehearsal.pk, name, request.user, body)
        rehearsal.refresh_from_db()
        return Response({"message": message, "state": rehearsal_state(rehearsal, request.user)})


class StepRunFilters(serializers.Serializer):
    rehearsal = _id_filter("Step runs of this rehearsal (every attempt).")
    status = serializers.ChoiceField(choices=StepRun.Status.choices, required=False)


@extend_schema_view(list=extend_schema(parameters=[StepRunFilters]))
class StepRunViewSet(viewsets.ReadOnlyModelViewSet):
    """One attempt of one step: status, result, error, latest progress, its approvals. Its events (paged by
    ``seq``) are at ``/api/v1/step-runs/{id}/events/``."""
    serializer_class = s.StepRunSerializer

    def get_queryset(self):
        queryset = StepRun.objects.select_related("step", "requested_by").prefetch_related(
            "approvals__requested_by", "approvals__approver", "approvals__step_run")
        return _filtered(self, queryset, StepRunFilters)


class FindingFilters(serializers.Serializer):
    rehearsal = _id_filter("Findings of this rehearsal's diff steps.")
    step_run = _id_filter("Findings of this diff step run.")
    selected = serializers.BooleanField(required=False, allow_null=True, default=None,
                                        help_text="Only files chosen (or not chosen) for sync-back.")


@extend_schema_view(list=extend_schema(parameters=[FindingFilters]))
class FindingViewSet(viewsets.ReadOnlyModelViewSet):
    """Files that differ between the repaired clone and production, with the database's verdict on each.
    Choose which go back with the diff step run's ``select`` action."""
    serializer_class = s.FindingSerializer

    def get_queryset(self):
        return _filtered(self, Finding.objects.all(), FindingFilters)


class ApprovalFilters(serializers.Serializer):
    rehearsal = _id_filter("Approvals of this rehearsal's step runs.")
    step_run = _id_filter("Approvals of this step run.")
    decision = serializers.ChoiceField(choices=Approval.Decision.choices, required=False)


@extend_schema_view(list=extend_schema(parameters=[ApprovalFilters]))
class ApprovalViewSet(viewsets.ReadOnlyModelViewSet):
    """Four-eyes approvals: who asked, who decided, what plan was approved. Decide one with the rehearsal's
    ``approve`` / ``reject`` action."""
    serializer_class = s.ApprovalSerializer

    def get_queryset(self):
        queryset = Approval.objects.select_related("step_run", "requested_by", "approver")
        return _filtered(self, queryset, ApprovalFilters, rehearsal="step_run__rehearsal")


class TimelineFilters(serializers.Serializer):
    incident = _id_filter("Entries of this incident.")
    rehearsal = _id_filter("Entries of this run.")
    action = serializers.CharField(required=False, max_length=40, help_text="Entries whose action starts so.")


@extend_schema_view(list=extend_schema(parameters=[TimelineFilters]))
class TimelineViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit timeline the incident and hypervisor pages show: who did what, when."""
    serializer_class = s.TimelineEntrySerializer

    def get_queryset(self):
        queryset = TimelineEntry.objects.select_related("actor").filter(
            Q(incident__isnull=False) | Q(rehearsal__isnull=False) | Q(action__startswith="hypervisor."))
        return _filtered(self, queryset, TimelineFilters, action="action__startswith")


def register(router) -> None:
    router.register("incidents", IncidentViewSet, basename="incident")
    router.register("hosts", ProductionHostViewSet, basename="host")
    router.register("hypervisors", HypervisorViewSet, basename="hypervisor")
    router.register("runbooks", RunbookViewSet, basename="runbook")
    router.register("rehearsals", RehearsalViewSet, basename="rehearsal")
    router.register("step-runs", StepRunViewSet, basename="step-run")
    router.register("findings", FindingViewSet, basename="finding")
    router.register("approvals", ApprovalViewSet, basename="approval")
    router.register("timeline", TimelineViewSet, basename="timeline")
