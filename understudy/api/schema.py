"""The OpenAPI description's additions: the errors every operation may answer, and the token scheme."""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from .parsers import MAX_BODY_BYTES


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.api.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "ust_… (a personal API token)"}


class Error(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, for a person to read.")


# 400: either {"detail": "…"} or a serializer's {"field": ["…"]}.
FIELD_ERRORS = {"type": "object", "additionalProperties": {},
                "description": "{\"detail\": \"…\"}, or the errors per field: {\"field\": [\"…\"]}"}


class Schema(AutoSchema):
    """Every operation also lists the errors it may answer (the body: ``Error``, or field errors for a 400)."""

    def _error_responses(self) -> dict[str, tuple[object, str]]:
        out = {"401": (Error, "No valid credentials: log in, or send 'Authorization: Bearer <token>'."),
               "403": (Error, "Your role may not do this (managers read; ops act), or the CSRF token is missing.")}
        if "{" in self.path:
            out["404"] = (Error, "No such object.")
        writes = self.method in {"POST", "PUT", "PATCH", "DELETE"}
        if writes or self._is_list_view() or self.get_override_parameters():
            out["400"] = (FIELD_ERRORS, "The request is malformed; the body says which part.")
        if writes:
            out["409"] = (Error, "Refused in the current state (a transition that is not allowed now); "
                                 "nothing changed.")
            out["413"] = (Error, f"The body is larger than {MAX_BODY_BYTES} bytes.")
            out["415"] = (Error, "The body is not JSON.")
        return out

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, (body, text) in self._error_responses().items():
            responses.setdefault(code, self._get_response_for_code(OpenApiResponse(body, text), code,
                                                                   direction=direction))
        return responses
