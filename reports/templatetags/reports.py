"""The report's way of writing a duration, for pages outside the report body."""
from django import template

from reports.data import duration as duration_text

register = template.Library()


@register.filter
def duration(seconds) -> str:
    return duration_text(seconds if seconds not in ("", None) else None)
