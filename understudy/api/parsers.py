"""The API's one parser: JSON, at most 64 KiB; nesting that overflows the parser is a 400 (not a 500), and so
is a NUL character anywhere in it (PostgreSQL cannot store one in text: it would fail deep in a transition).

Its own module, importing no DRF views: ``APIView`` reads the parser setting when DRF loads."""
from __future__ import annotations

import json

from rest_framework import exceptions, parsers, status

MAX_BODY_BYTES = 64 * 1024


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"the body is larger than {MAX_BODY_BYTES} bytes"
    default_code = "too_large"


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _has_nul(value) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class BoundedJSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
        except RecursionError:
            raise exceptions.ParseError("invalid JSON: nested too deeply")
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(f"invalid JSON: {str(exc)[:200]}")
        if _has_nul(data):
            raise exceptions.ParseError("text in the body must not contain NUL characters")
        return data
