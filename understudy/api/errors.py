"""The domain's refusals as HTTP, and the API's 404.

Every error body is ``{"detail": "…"}``, except a serializer's field errors (400, ``{"field": ["…"]}``): a
transition refused in the current state (``TransitionError``, ``actions.ActionError``) is a 409, a wrong input
(``actions.InvalidInput``, a model's ``ValidationError``) a 400, a role's refusal (``PermissionDenied``) a 403."""
from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler

from rehearsals.actions import ActionError, InvalidInput
from rehearsals.errors import TransitionError


class BadRequest(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "the request is malformed"
    default_code = "bad_request"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "refused in the current state"
    default_code = "conflict"


def exception_handler(exc, context):
    if isinstance(exc, InvalidInput):
        exc = BadRequest(str(exc))
    elif isinstance(exc, (ActionError, TransitionError)):
        exc = Conflict(str(exc))
    elif isinstance(exc, DjangoValidationError):
        exc = BadRequest("; ".join(exc.messages))
    return drf_exception_handler(exc, context)


def not_found(request, exception):
    """A URL no route matches: JSON under /api/, the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "no such API endpoint (see /api/v1/schema/ or /api/v1/docs/)"}, status=404)
    return page_not_found(request, exception)
