"""A step kind reaches the production host only through its StepContext, the one place that
decides what "production" is in each mode (the stand-in in a dress rehearsal) and refuses a
write to the real host there. Calling the host row's own ``endpoint()`` would bypass that."""
import ast
from pathlib import Path

STEPS = Path(__file__).resolve().parents[2] / "steps"


def _bypasses(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "endpoint"
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "production_host"):
            lines.append(node.lineno)
    return lines


def test_no_step_kind_builds_its_own_endpoint_to_the_production_host():
    offenders = {str(p.relative_to(STEPS.parent)): lines for p in sorted(STEPS.rglob("*.py"))
                 if (lines := _bypasses(ast.parse(p.read_text())))}
    assert offenders == {}, f"use ctx.production_endpoint() / ctx.real_production(access): {offenders}"


def test_the_check_sees_a_bypass():
    assert _bypasses(ast.parse("ep = ctx.rehearsal.incident.production_host.endpoint()")) == [1]
