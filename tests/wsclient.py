"""A WebSocket client against the real ASGI application (auth middleware,
origin validation, routing), logged in with a real session cookie."""
from __future__ import annotations

import json
from urllib.parse import quote

from channels.testing import WebsocketCommunicator
from django.test import Client

from understudy.asgi import application


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def communicator(cookie: str | None, rehearsal_id: int, after: dict | None = None) -> WebsocketCommunicator:
    """``cookie`` comes from ``session_cookie(user)`` (call it outside async code)."""
    path = f"/ws/rehearsals/{rehearsal_id}/?after={quote(json.dumps(after or {}))}"
    headers = [(b"origin", b"http://localhost")]
    if cookie is not None:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)
