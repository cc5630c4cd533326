"""A WebSocket client against the real ASGI application (auth middleware,
origin validation, routing), logged in with a real session cookie."""
from __future__ import annotations

import json
from urllib.parse import quote

from channels.testing import WebsocketCommunicator
from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret
from django.test import Client

from understudy.asgi import application


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def communicator(cookie: str | None, rehearsal_id: int, after: dict | None = None, *,
                 origin: bytes | None = b"http://localhost", path: str | None = None) -> WebsocketCommunicator:
    """``cookie`` comes from ``session_cookie(user)`` (call it outside async code).

    The socket carries a CSRF cookie as a browser would; ``comm.csrf_token`` is the token the page
    has, to put in action messages as ``"csrf"``."""
    path = path or f"/ws/rehearsals/{rehearsal_id}/?after={quote(json.dumps(after or {}))}"
    headers = [(b"origin", origin)] if origin is not None else []
    secret = _get_new_csrf_string()
    cookies = f"csrftoken={secret}"
    if cookie is not None:
        cookies += f"; sessionid={cookie}"
    headers.append((b"cookie", cookies.encode()))
    comm = WebsocketCommunicator(application, path, headers=headers)
    comm.csrf_token = _mask_cipher_secret(secret)
    return comm
