"""The runbook editor: forms from each kind's params schema, errors inline, add/edit/move/delete, a new
version from one that ran, the comparison of two versions, read-only once a version has run."""
from __future__ import annotations

import pytest

from runbooks.kinds import registry
from runbooks.models import Runbook, StepSpec

pytestmark = pytest.mark.django_db


@pytest.fixture
def runbook(db):
    rb = Runbook.objects.create(name="repair minidb", version=1)
    StepSpec.objects.create(runbook=rb, position=1, kind="manual", title="first", params={"instructions": "one"})
    StepSpec.objects.create(runbook=rb, position=2, kind="manual", title="second", params={"instructions": "two"})
    return rb


def _titles(rb) -> list[str]:
    return list(rb.steps.order_by("position").values_list("title", flat=True))


def test_every_kind_gets_a_form_with_a_field_per_parameter(runbook, users, client_for):
    alice = client_for(users["alice"])
    for kind in registry.all():
        resp = alice.get(f"/runbooks/{runbook.pk}/steps/add/?kind={kind.name}")
        assert resp.status_code == 200, kind.name
        page = resp.content.decode()
        for name in kind.params:
            assert f'name="p_{name}"' in page, (kind.name, name)


def test_a_step_is_added_with_its_errors_inline_first(runbook, users, client_for):
    alice = client_for(users["alice"])
    url = f"/runbooks/{runbook.pk}/steps/add/"
    resp = alice.post(url, {"kind": "command", "title": "count files", "target": "production",
                            "estimated_seconds": "30", "p_command": ""})
    assert resp.status_code == 400
    assert '<p class="error" role="alert">command: required</p>' in resp.content.decode()   # on its field
    resp = alice.post(url, {"kind": "command", "title": "count files", "target": "production",
                            "estimated_seconds": "30", "p_command": "ls", "p_timeout": "0"})
    assert resp.status_code == 400   # the Int's minimum, from the schema, checked by the form field
    assert "Ensure this value is greater than or equal to 1." in resp.content.decode()
    assert _titles(runbook) == ["first", "second"]
    resp = alice.post(url, {"kind": "command", "title": "count files", "target": "production",
                            "estimated_seconds": "30", "p_command": "ls /srv | wc -l", "p_timeout": "120"})
    assert resp.status_code == 302
    step = runbook.steps.get(position=3)
    assert (step.title, step.params["command"], step.params["timeout"], step.params["expect_exit"]) == \
        ("count files", "ls /srv | wc -l", 120, 0)


def test_a_json_parameter_that_does_not_parse_is_a_field_error(runbook, users, client_for):
    kind = next(k for k in registry.all() if any(type(f).__name__ == "List" and type(f.of).__name__ == "Field"
                                                 for f in k.params.values()))
    name = next(n for n, f in kind.params.items() if type(f).__name__ == "List")
    resp = client_for(users["alice"]).post(f"/runbooks/{runbook.pk}/steps/add/", {
        "kind": kind.name, "title": "t", "target": sorted(kind.targets)[0], "estimated_seconds": "1",
        f"p_{name}": "[{not json"})
    assert resp.status_code == 400 and "not valid JSON" in resp.content.decode()


def test_steps_are_edited_moved_and_deleted(runbook, users, client_for):
    alice = client_for(users["alice"])
    first, second = runbook.steps.order_by("position")
    page = alice.get(f"/runbooks/{runbook.pk}/steps/{first.pk}/").content.decode()
    assert ">\none</textarea>" in page and 'value="first"' in page
    resp = alice.post(f"/runbooks/{runbook.pk}/steps/{first.pk}/", {
        "kind": "manual", "title": "first, clearer", "target": "production", "estimated_seconds": "90",
        "p_instructions": "one, with the checklist"})
    assert resp.status_code == 302
    first.refresh_from_db()
    assert (first.title, first.params, first.estimated_seconds) == \
        ("first, clearer", {"instructions": "one, with the checklist"}, 90)
    assert alice.post(f"/runbooks/{runbook.pk}/steps/{first.pk}/down/").status_code == 302
    assert _titles(runbook) == ["second", "first, clearer"]
    alice.post(f"/runbooks/{runbook.pk}/steps/{first.pk}/down/")   # already last: nothing moves
    assert _titles(runbook) == ["second", "first, clearer"]
    alice.post(f"/runbooks/{runbook.pk}/steps/{first.pk}/up/")
    assert _titles(runbook) == ["first, clearer", "second"]
    alice.post(f"/runbooks/{runbook.pk}/steps/{first.pk}/delete/")
    assert list(runbook.steps.values_list("position", "title")) == [(1, "second")]
    assert alice.post(f"/runbooks/{runbook.pk}/steps/{second.pk}/sideways/", follow=True).status_code == 200


def test_a_version_that_ran_is_read_only_and_a_new_version_is_editable(runbook, users, client_for):
    alice = client_for(users["alice"])
    runbook.lock()
    page = alice.get(f"/runbooks/{runbook.pk}/").content.decode()
    assert "has run · read-only" in page and "/steps/add/" not in page and "/delete/" not in page
    first = runbook.steps.get(position=1)
    resp = alice.post(f"/runbooks/{runbook.pk}/steps/{first.pk}/", {
        "kind": "manual", "title": "changed", "target": "production", "estimated_seconds": "1",
        "p_instructions": "x"}, follow=True)
    assert "has already run and is read-only" in resp.content.decode()
    resp = alice.post(f"/runbooks/{runbook.pk}/steps/{first.pk}/delete/", follow=True)
    assert "has already run and is read-only" in resp.content.decode()
    assert _titles(runbook) == ["first", "second"]
    resp = alice.post(f"/runbooks/{runbook.pk}/new-version/")
    v2 = Runbook.objects.get(name="repair minidb", version=2)
    assert resp["Location"] == f"/runbooks/{v2.pk}/" and v2.created_by == users["alice"]
    alice.post(f"/runbooks/{v2.pk}/steps/{v2.steps.get(position=2).pk}/", {
        "kind": "manual", "title": "second", "target": "production", "estimated_seconds": "60",
        "p_instructions": "two, then page the DBA"})
    changes = alice.get(f"/runbooks/{v2.pk}/compare/").content.decode()
    assert "repair minidb v1" in changes
    assert '<span class="removed">-      &quot;params&quot;: {' not in changes
    assert 'class="removed">-        &quot;instructions&quot;: &quot;two&quot;' in changes
    assert 'class="added">+        &quot;instructions&quot;: &quot;two, then page the DBA&quot;' in changes
    assert runbook.steps.get(position=2).params == {"instructions": "two"}


def test_a_manager_sees_no_editor_control_and_is_refused(runbook, users, client_for):
    mona = client_for(users["mona"])
    page = mona.get(f"/runbooks/{runbook.pk}/").content.decode()
    assert "<button" not in page.split("<main>")[1] and "/steps/add/" not in page
    first = runbook.steps.get(position=1)
    for method, path in (("get", f"/runbooks/{runbook.pk}/steps/add/?kind=manual"),
                         ("post", f"/runbooks/{runbook.pk}/steps/add/"),
                         ("get", f"/runbooks/{runbook.pk}/steps/{first.pk}/"),
                         ("post", f"/runbooks/{runbook.pk}/steps/{first.pk}/"),
                         ("post", f"/runbooks/{runbook.pk}/steps/{first.pk}/delete/"),
                         ("post", f"/runbooks/{runbook.pk}/new-version/")):
        assert getattr(mona, method)(path).status_code == 403, path
    assert _titles(runbook) == ["first", "second"] and Runbook.objects.filter(name="repair minidb").count() == 1
