"""Who may change a report and how: ops edit the narrative and publish, managers mark a
published version reviewed. Draft → In review → Published; every change is on the
incident's timeline. Publishing freezes a version; editing a published report opens
the next draft."""
from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from accounts.roles import require_manager, require_operator
from rehearsals import audit
from rehearsals.errors import TransitionError
from rehearsals.models import Rehearsal

from . import data, render
from .models import ActionItem, Report, ReportVersion

NARRATIVE = ("summary", "went_well", "went_wrong", "got_lucky")


def report_for(rehearsal: Rehearsal) -> Report:
    report, _ = Report.objects.get_or_create(rehearsal=rehearsal)
    return report


def _run(report: Report) -> str:
    return f"{report.rehearsal.kind_label.lower()} #{report.rehearsal_id}"


def _record(report: Report, user, action: str, message: str) -> None:
    audit.record(report.rehearsal.incident, user, action, message, rehearsal=report.rehearsal)


def _reopen(report: Report) -> None:
    # A published report that changes is the next version's draft; the published one stays as it was.
    if report.status == Report.Status.PUBLISHED:
        report.status = Report.Status.DRAFT


@transaction.atomic
def edit_narrative(report: Report, user, fields: dict[str, str]) -> Report:
    require_operator(user)
    report = Report.objects.select_for_update().get(pk=report.pk)
    changed = [name for name in NARRATIVE if name in fields and fields[name] != getattr(report, name)]
    for name in changed:
        setattr(report, name, fields[name])
    if changed:
        _reopen(report)
        report.updated_by = user
        report.save()
        _record(report, user, "report.edited", f"Edited the report of {_run(report)}: "
                                               f"{', '.join(changed)}")
    return report


@transaction.atomic
def add_action_item(report: Report, user, *, text: str, owner: str = "", due: dt.date | None = None) -> ActionItem:
    require_operator(user)
    if not text.strip():
        raise TransitionError("an action item needs a text")
    report = Report.objects.select_for_update().get(pk=report.pk)
    item = ActionItem.objects.create(report=report, text=text.strip(), owner=owner.strip(), due=due)
    _reopen(report)
    report.updated_by = user
    report.save()
    _record(report, user, "report.action_item", f"Action item for {_run(report)}: {item.text}"
                                                + (f" (owner {item.owner})" if item.owner else ""))
    return item


@transaction.atomic
def set_action_item_done(item: ActionItem, user, done: bool) -> ActionItem:
    require_operator(user)
    report = Report.objects.select_for_update().get(pk=item.report_id)
    item.done = done
    item.save(update_fields=["done"])
    _reopen(report)
    report.updated_by = user
    report.save()
    _record(report, user, "report.action_item", f"Action item {'done' if done else 'reopened'}: {item.text}")
    return item


@transaction.atomic
def submit_for_review(report: Report, user) -> Report:
    require_operator(user)
    report = Report.objects.select_for_update().get(pk=report.pk)
    if report.status != Report.Status.DRAFT:
        raise TransitionError(f"the report is {report.get_status_display().lower()}, not a draft")
    report.status = Report.Status.IN_REVIEW
    report.save(update_fields=["status", "updated_at"])
    _record(report, user, "report.in_review", f"Report of {_run(report)} is in review")
    return report


@transaction.atomic
def publish(report: Report, user) -> ReportVersion:
    """Freeze the next version: the data snapshot and the HTML rendered from it."""
    require_operator(user)
    report = Report.objects.select_for_update().get(pk=report.pk)
    if report.status != Report.Status.IN_REVIEW:
        raise TransitionError(f"only a report in review is published; this one is "
                              f"{report.get_status_display().lower()}")
    report.status = Report.Status.PUBLISHED
    report.save(update_fields=["status", "updated_at"])
    snapshot = data.build(report.rehearsal)
    number = (report.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = ReportVersion.objects.create(report=report, number=number, snapshot=snapshot,
                                           html=render.html_body(snapshot), published_by=user)
    _record(report, user, "report.published", f"Published version {number} of the report of {_run(report)}")
    return version


@transaction.atomic
def mark_reviewed(version: ReportVersion, user) -> ReportVersion:
    require_manager(user)
    version = ReportVersion.objects.select_for_update().get(pk=version.pk)
    if version.reviewed_by_id is None:
        version.reviewed_by, version.reviewed_at = user, timezone.now()
        version.save(update_fields=["reviewed_by", "reviewed_at"])
        _record(version.report, user, "report.reviewed", f"Reviewed version {version.number} of the report of "
                                                         f"{_run(version.report)}")
    return version
