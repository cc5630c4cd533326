"""The report as the API shows it, and the inputs of its changes (made by ``reports.lifecycle``)."""
from __future__ import annotations

from rest_framework import serializers

from rehearsals.api import fields

from ..models import ActionItem, Report, ReportVersion


def _username():
    return serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)


class ActionItemSerializer(fields.ModelSerializer):
    class Meta:
        model = ActionItem
        fields = ["id", "text", "owner", "due", "done"]
        read_only_fields = ["done"]


class ActionItemDoneSerializer(serializers.Serializer):
    done = fields.Boolean(help_text="true: done; false: open again.")


class VersionSerializer(fields.ModelSerializer):
    published_by = _username()
    reviewed_by = _username()

    class Meta:
        model = ReportVersion
        fields = ["number", "published_by", "published_at", "reviewed_by", "reviewed_at"]


class VersionDetailSerializer(VersionSerializer):
    snapshot = serializers.JSONField(help_text="Every fact the report shows, as published (frozen).")
    html = serializers.CharField(help_text="The report as rendered when it was published (UTC).")

    class Meta(VersionSerializer.Meta):
        fields = VersionSerializer.Meta.fields + ["snapshot", "html"]


class NarrativeSerializer(fields.ModelSerializer):
    """What ops write; a field left out stays as it is. Editing a published report opens the next draft."""

    class Meta:
        model = Report
        fields = ["summary", "went_well", "went_wrong", "got_lucky"]
        extra_kwargs = {name: {"required": False, "max_length": 20000} for name in fields}


class ReportSerializer(fields.ModelSerializer):
    rehearsal = serializers.IntegerField(source="rehearsal_id", read_only=True)
    updated_by = _username()
    action_items = ActionItemSerializer(many=True, read_only=True)
    versions = VersionSerializer(many=True, read_only=True)
    page = serializers.CharField(source="get_absolute_url", read_only=True)

    class Meta:
        model = Report
        fields = ["rehearsal", "status", "summary", "went_well", "went_wrong", "got_lucky", "updated_by",
                  "updated_at", "action_items", "versions", "page"]


class ReportDetailSerializer(ReportSerializer):
    snapshot = serializers.SerializerMethodField(help_text="The draft's facts, built from what the run recorded "
                                                           "now (a published version freezes its own).")

    class Meta(ReportSerializer.Meta):
        fields = ReportSerializer.Meta.fields + ["snapshot"]

    def get_snapshot(self, report) -> dict:
        return self.context["snapshot"]
