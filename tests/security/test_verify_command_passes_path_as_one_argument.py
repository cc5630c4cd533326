"""The diff's verify command gets a production file's name as one argv word, never as shell text.

A production file named ``a$(id>/tmp/p).dbf`` is verified on both real test hosts without
running anything; templates that would put ``{path}`` inside a shell string are refused when
the runbook is saved, and by the engine before it connects.
"""
from __future__ import annotations

from typing import Any

import pytest

from runbooks.kinds import registry
from tests.support.sync import endpoint, put
from workers.engines.manifest import build_pair, check_verify_template, classify, diff_manifests

HOSTILE = "a$(id>/tmp/p).dbf"
ROOT = "/srv/data"


@pytest.mark.parametrize("template", [
    "sh -c 'dbverify {path}'",
    'bash -c "dbverify {path}"',
    "/bin/sh -c 'dbverify \"$0\"' {path}",
    "env sh -c 'dbverify {path}'",
    "dbverify '{path}'",
    'dbverify "{path}"',
    "dbverify --file={path}",
    "dbverify {path}.bak",
    "python3 -c 'import os; os.system(\"{path}\")'",
    "dbverify",
])
def test_a_template_that_puts_path_in_a_shell_string_is_refused(db, template: str) -> None:
    assert check_verify_template(template), template
    errors = registry.validate("diff", {"paths": [ROOT], "verify_command": template}, "clone")
    assert any(e.startswith("verify_command: ") for e in errors), (template, errors)


@pytest.mark.parametrize("template", ["dbverify {path}", "dbverify --quick {path}", "/usr/bin/dbverify -v {path}",
                                      "python3 /opt/tools/verify.py {path}"])
def test_a_template_with_path_as_its_own_word_is_accepted(db, template: str) -> None:
    assert check_verify_template(template) == []
    assert registry.validate("diff", {"paths": [ROOT], "verify_command": template}, "clone") == []


def test_a_hostile_file_name_is_one_argument_on_both_hosts(make_test_host: Any) -> None:
    clone, prod = make_test_host("clone"), make_test_host("production")
    put(clone, f"{ROOT}/{HOSTILE}", b"healthy\n")
    put(prod, f"{ROOT}/{HOSTILE}", b"damaged\n")
    ce, pe = endpoint(clone, "clone"), endpoint(prod, "production")
    mc, mp = build_pair(ce, pe, [ROOT])
    diff = diff_manifests(mc, mp)
    assert [e.display for e in diff.changed] == [f"{ROOT}/{HOSTILE}"]

    # refused before any connection: the old substitution ran `id` on both hosts here
    with pytest.raises(ValueError, match="would interpret the path as code"):
        classify(diff, "sh -c 'cat {path}'", ce, pe)
    # the path as its own word: `cat` finds the file by its real name on both sides (exit 0)
    result = classify(diff, "cat {path}", ce, pe)
    [verdict] = result.files
    assert verdict.clone["exit_code"] == 0 and verdict.production["exit_code"] == 0, verdict
    assert verdict.cls == "newer_on_production"
    for host in (clone, prod):
        assert host.run("test -e /tmp/p", check=False).returncode != 0, f"/tmp/p appeared on {host.hostname}"
