"""Paging of every list: ``?limit=&offset=``; a value that is not a number in range is a 400 that says so
(DRF's own class would quietly fall back to its default)."""
from __future__ import annotations

from rest_framework import exceptions
from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500
    max_offset = 10**9

    def _number(self, request, name: str, default: int, low: int, high: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 10 and low <= int(raw) <= high):
            raise exceptions.ValidationError({name: [f"{name} must be an integer from {low} to {high}"]})
        return int(raw)

    def get_limit(self, request):
        return self._number(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request):
        return self._number(request, self.offset_query_param, 0, 0, self.max_offset)

    def get_schema_operation_parameters(self, view):
        params = super().get_schema_operation_parameters(view)
        for p in params:
            if p["name"] == self.limit_query_param:
                p["schema"].update({"minimum": 1, "maximum": self.max_limit, "default": self.default_limit})
            elif p["name"] == self.offset_query_param:
                p["schema"].update({"minimum": 0, "maximum": self.max_offset, "default": 0})
        return params
