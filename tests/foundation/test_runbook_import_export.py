"""Runbooks round-trip through JSON; an invalid runbook is refused whole, with every error."""
import json

import pytest
from django.core.management import CommandError, call_command

from runbooks.documents import InvalidRunbook, import_runbook, runbook_to_dict
from runbooks.models import Runbook, StepSpec
from runbooks.seed import load_seed_runbook


def test_seed_round_trips_as_a_new_version(db):
    seed = load_seed_runbook(Runbook, StepSpec)
    copy = import_runbook(runbook_to_dict(seed))
    assert copy.name == seed.name and copy.version == seed.version + 1
    assert runbook_to_dict(copy)["steps"] == runbook_to_dict(seed)["steps"]


def test_invalid_runbook_lists_every_error_and_creates_nothing(db):
    bad = {"name": "broken", "steps": [
        {"kind": "command", "title": "ok", "params": {"command": "true"}},
        {"kind": "command", "title": "no command", "params": {}},
        {"kind": "teleport", "title": "what"},
        {"kind": "diff", "title": "diff", "target": "clone", "params": {"paths": ["relative"]}, "colour": "red"},
    ]}
    with pytest.raises(InvalidRunbook) as err:
        import_runbook(bad)
    text = str(err.value)
    assert "step 2 (no command): command: required" in text
    assert "step 3 (what): kind: unknown step kind 'teleport'" in text
    assert "step 4 (diff): unknown key 'colour'" in text
    assert "step 4 (diff): paths[0]: 'relative' must be an absolute path" in text
    assert not Runbook.objects.filter(name="broken").exists()


def test_commands_export_and_import(db, tmp_path, capsys):
    seed = load_seed_runbook(Runbook, StepSpec)
    call_command("runbook", "export", seed.name)
    exported = capsys.readouterr().out
    path = tmp_path / "rb.json"
    path.write_text(exported)
    call_command("runbook", "import", str(path))
    assert Runbook.objects.filter(name=seed.name).count() == 2
    path.write_text(json.dumps({"name": "x", "steps": []}))
    with pytest.raises(CommandError, match="steps: a non-empty list is required"):
        call_command("runbook", "import", str(path))
    # a NUL anywhere (PostgreSQL stores none in text or JSON) is refused as a clear error, not a crash
    path.write_text(json.dumps({"name": "nul", "steps": [{"kind": "command", "title": "t",
                                                          "params": {"command": "echo \u0000"}}]}))
    with pytest.raises(CommandError, match="NUL character"):
        call_command("runbook", "import", str(path))
    assert not Runbook.objects.filter(name="nul").exists()
    path.write_text("{not json")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("runbook", "import", str(path))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("runbook", "import", str(tmp_path / "missing.json"))


def test_check_sets_are_reusable_and_validated(db):
    good = {"name": "with sets", "check_sets": {"db ok": [{"type": "command", "name": "v", "command": "true"}]},
            "steps": [{"kind": "check", "title": "a", "params": {"check_set": "db ok"}},
                      {"kind": "check", "title": "b", "target": "clone",
                       "params": {"check_set": "db ok", "checks": [{"type": "tcp", "name": "port", "port": 22}]}}]}
    rb = import_runbook(good)
    assert rb.check_sets == good["check_sets"] and runbook_to_dict(rb)["check_sets"] == good["check_sets"]
    bad = {"name": "bad sets", "check_sets": {"broken": [{"type": "smoke"}]},
           "steps": [{"kind": "check", "title": "a", "params": {"check_set": "missing"}},
                     {"kind": "check", "title": "b", "params": {}}]}
    with pytest.raises(InvalidRunbook) as err:
        import_runbook(bad)
    text = str(err.value)
    assert "check_sets.broken: check #1: type must be one of" in text
    assert "step 1 (a): check_set: runbook 'bad sets' has no check set 'missing'" in text
    assert "step 2 (b): checks: give a list of checks, a check_set, or both" in text
    # on the model too: a step naming a set its runbook lacks cannot be saved
    step = rb.new_version().steps.get(position=1)
    step.params = {"check_set": "nope"}
    with pytest.raises(ValueError, match="has no check set 'nope'"):
        step.save()
