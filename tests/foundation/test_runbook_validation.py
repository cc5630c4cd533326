"""Runbooks: typed params validated on save, the seed runbook, immutable versions."""
import pytest
from django.core.exceptions import ValidationError

from runbooks.kinds import registry
from runbooks.models import Runbook, RunbookLocked, StepSpec
from runbooks.params import ParamErrors
from runbooks.seed import SEED_NAME, load_seed_runbook


def test_seed_runbook_has_the_eleven_steps_of_the_story(db):
    # The data migration loads it; transactional tests flush the DB, so load it again if needed.
    rb = load_seed_runbook(Runbook, StepSpec)
    assert rb.name == SEED_NAME and rb.version == 1
    kinds = list(rb.steps.values_list("kind", flat=True))
    assert kinds == ["command", "clone", "import_backup", "command", "check", "diff", "sync_back", "live_sync",
                     "check", "manual", "command"]
    assert rb.steps.get(kind="sync_back").needs_approval
    for spec in rb.steps.all():
        assert registry.validate(spec.kind, spec.params, spec.target) == []


def test_invalid_params_list_every_error(db):
    rb = Runbook.objects.create(name="bad", version=1)
    with pytest.raises(ParamErrors) as err:
        StepSpec.objects.create(runbook=rb, position=1, kind="command", title="x",
                                params={"timeout": -1, "expect_exit": "zero", "colour": "red"})
    text = str(err.value)
    assert "command: required" in text
    assert "timeout: -1 is below the minimum 1" in text
    assert "expect_exit: expected an integer" in text
    assert "colour: unknown parameter" in text


def test_unknown_kind_and_wrong_target_are_rejected(db):
    assert registry.validate("teleport", {}, "production")[0].startswith("kind: unknown step kind 'teleport'")
    errors = registry.validate("diff", {"paths": ["/data"]}, "production")
    assert any("runs against clone" in e for e in errors)
    errors = registry.validate("diff", {"paths": ["data/../etc"], "verify_command": "dbverify"}, "clone")
    assert any("must be an absolute path" in e for e in errors)
    assert any("verify_command: must contain {path}" in e for e in errors)


def test_nested_checks_are_validated(db):
    errors = registry.validate("check", {"checks": [{"type": "http", "name": "web", "url": "ftp://x"},
                                                    {"type": "smoke", "name": "?"}]}, "clone")
    assert any("check #1 (web): url must start with http://" in e for e in errors)
    assert any("check #2: type must be one of" in e and "'smoke'" in e for e in errors)


def test_model_clean_reports_param_errors(db):
    rb = Runbook.objects.create(name="bad2", version=1)
    spec = StepSpec(runbook=rb, position=1, kind="live_sync", title="x", params={"mode": "vendor"})
    with pytest.raises(ValidationError, match="command: required when mode is vendor"):
        spec.full_clean()


def test_a_version_that_ran_is_immutable(make_rehearsal, host_row):
    r = make_rehearsal(host_row, [{"kind": "manual", "params": {"instructions": "x"}}])
    step = r.runbook.steps.get()
    step.title = "changed after the fact"
    with pytest.raises(RunbookLocked, match="immutable"):
        step.save()
    with pytest.raises(RunbookLocked):
        step.delete()
    v2 = r.runbook.new_version()
    assert v2.version == 2 and v2.steps.count() == 1 and not v2.is_locked
    s2 = v2.steps.get()
    s2.title = "edited in v2"
    s2.save()
