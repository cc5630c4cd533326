"""The incident report over the REST API: everyone with a role reads it and its published versions; ops edit the
narrative, add action items, submit and publish; managers mark a published version reviewed. Every change is a
``reports.lifecycle`` function (the same as the report page's), which checks who may make it."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.api import Reader
from rehearsals.models import Rehearsal

from .. import data, lifecycle
from ..models import ActionItem, Report, ReportVersion
from . import serializers as s

NUMBER = OpenApiParameter("number", int, OpenApiParameter.PATH, description="The published version's number.")
ITEM = OpenApiParameter("item", int, OpenApiParameter.PATH, description="The action item's id.")


class ReportViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The report of one run, addressed by the run's id (``/reports/{rehearsal}/``)."""
    queryset = Rehearsal.objects.select_related("incident")
    serializer_class = s.ReportSerializer

    def _report(self) -> Report:
        return lifecycle.report_for(self.get_object())

    def _answer(self, report: Report, code: int = status.HTTP_200_OK) -> Response:
        report.refresh_from_db()
        return Response(s.ReportSerializer(report).data, status=code)

    @extend_schema(responses=s.ReportDetailSerializer, summary="The report: narrative, action items, versions, "
                                                                "and the draft's facts")
    def retrieve(self, request, pk=None):
        report = self._report()
        snapshot = data.build(report.rehearsal)
        return Response(s.ReportDetailSerializer(report, context={"snapshot": snapshot}).data)

    @extend_schema(request=s.NarrativeSerializer, responses=s.ReportSerializer, summary="Edit the narrative")
    def partial_update(self, request, pk=None):
        report = self._report()
        body = s.NarrativeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._answer(lifecycle.edit_narrative(report, request.user, body.validated_data))

    @extend_schema(request=s.ActionItemSerializer, responses={201: s.ActionItemSerializer},
                   summary="Add an action item")
    @action(detail=True, methods=["post"], url_path="action-items", url_name="action-items")
    def add_action_item(self, request, pk=None):
        report = self._report()
        body = s.ActionItemSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        item = lifecycle.add_action_item(report, request.user, **body.validated_data)
        return Response(s.ActionItemSerializer(item).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.ActionItemDoneSerializer, responses=s.ActionItemSerializer, parameters=[ITEM],
                   summary="Mark an action item done (or open again)")
    @action(detail=True, methods=["post"], url_path=r"action-items/(?P<item>\d+)/done", url_name="action-item-done")
    def action_item_done(self, request, pk=None, item=None):
        report = self._report()
        row = get_object_or_404(ActionItem, pk=item, report=report)
        body = s.ActionItemDoneSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return Response(s.ActionItemSerializer(
            lifecycle.set_action_item_done(row, request.user, body.validated_data["done"])).data)

    @extend_schema(request=None, responses=s.ReportSerializer, summary="Submit the draft for review")
    @action(detail=True, methods=["post"])
    def submit(self, request, pk=None):
        return self._answer(lifecycle.submit_for_review(self._report(), request.user))

    @extend_schema(request=None, responses={201: s.VersionDetailSerializer},
                   summary="Publish the report in review as its next frozen version")
    @action(detail=True, methods=["post"])
    def publish(self, request, pk=None):
        version = lifecycle.publish(self._report(), request.user)
        return Response(s.VersionDetailSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=s.VersionSerializer(many=True), summary="The published versions")
    @action(detail=True, methods=["get"], pagination_class=None)
    def versions(self, request, pk=None):
        return Response(s.VersionSerializer(self._report().versions.all(), many=True).data)

    def _version(self, number) -> ReportVersion:
        return get_object_or_404(ReportVersion, report=self._report(), number=number)

    @extend_schema(responses=s.VersionDetailSerializer, parameters=[NUMBER], summary="One published version")
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>\d+)", url_name="version")
    def version(self, request, pk=None, number=None):
        return Response(s.VersionDetailSerializer(self._version(number)).data)

    @extend_schema(request=None, responses=s.VersionSerializer, parameters=[NUMBER],
                   summary="Mark a published version reviewed (managers)")
    @action(detail=True, methods=["post"], url_path=r"versions/(?P<number>\d+)/reviewed", url_name="reviewed",
            permission_classes=[Reader])
    def reviewed(self, request, pk=None, number=None):
        version = lifecycle.mark_reviewed(self._version(number), request.user)
        return Response(s.VersionSerializer(version).data)


def register(router) -> None:
    router.register("reports", ReportViewSet, basename="report")
