"""live_sync never writes production: clone -> production is refused when the runbook is saved or imported.

It would overwrite every differing file on production with no plan, no approval, no backup and no
drift guard; sync_back is the step that writes production.
"""
import pytest

from runbooks.documents import InvalidRunbook, import_runbook
from runbooks.kinds import registry
from runbooks.models import Runbook, StepSpec
from runbooks.params import ParamErrors

REFUSAL = "clone_to_production is refused"


def test_live_sync_clone_to_production_is_refused_at_validation(db):
    params = {"mode": "files", "paths": ["/srv/data"], "direction": "clone_to_production"}
    errors = registry.validate("live_sync", params, "production")
    assert any(REFUSAL in e and "sync_back" in e for e in errors), errors
    # the other direction (production -> clone, catching the clone up) stays valid
    assert registry.validate("live_sync", dict(params, direction="production_to_clone"), "clone") == []


def test_a_runbook_with_live_sync_to_production_is_not_saved_or_imported(db):
    rb = Runbook.objects.create(name="reverse-live", version=1)
    with pytest.raises(ParamErrors, match=REFUSAL):
        StepSpec.objects.create(runbook=rb, position=1, kind="live_sync", title="push", target="production",
                                params={"mode": "files", "paths": ["/srv/data"], "direction": "clone_to_production"})
    with pytest.raises(InvalidRunbook, match=REFUSAL):
        import_runbook({"name": "reverse-live-import", "steps": [
            {"kind": "live_sync", "title": "push", "target": "production",
             "params": {"mode": "files", "paths": ["/srv/data"], "direction": "clone_to_production"}}]})
