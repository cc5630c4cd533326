"""Formatting shared by the pages and the step kinds' panels."""
from __future__ import annotations

import json

from django import template

register = template.Library()


@register.filter
def bytes_iec(n) -> str:
    """1536 -> '1.5 KiB' (the units the engines and logs use)."""
    if n is None or n == "":
        return "?"
    n = float(n)
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.1f} {units[i]}" if i else f"{int(n)} {units[i]}"


@register.filter
def seconds(s) -> str:
    if s is None or s == "":
        return ""
    s = float(s)
    return f"{s:.1f} s" if s < 90 else f"{s / 60:.1f} min"


@register.filter
def evidence(ev) -> str:
    """A check's evidence as ``key=value`` pairs, leaving out the bulky tails."""
    return "  ".join(f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}"
                     for k, v in (ev or {}).items() if k not in {"type", "stdout_tail", "stderr_tail"})
