"""Live stream of a rehearsal to the browser, and the same actions as the UI.

On connect the client says from where it wants each step run's events
(``?after={"<step_run>": seq}``); the consumer joins the group first, then
replays the rows after that seq from the DB (a page at a time, filtered by the
database; at most REPLAY_LIMIT rows per step run — past that it sends a
``skipped`` frame with the range, which the log viewer reads over the log API
when it is scrolled to), then streams live frames. A step run the client does not
name is not replayed: its stream starts at the step run's last seq when the socket
opened (the ``replayed`` message says where), and the page reads what came before
over the log API. Frames are deduplicated by (step_run, seq) and a gap in the live
stream is filled from the DB, so the browser sees every event once, in order.

Reading needs ops or managers (checked on connect). Every action message is
checked again as it arrives: the user's groups are read from the database, the
session must still exist, and the message must carry the CSRF token of the
session (``"csrf"``), so neither a page on another site nor a user removed from
ops since the socket opened can act. Logging out closes the user's sockets
(``user_logged_out`` → the per-user group → ``session.ended``).
"""
from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.middleware import csrf

from accounts.roles import can_operate, can_read

from . import actions
from .events import remember_server_loop, user_group_name
from .models import Rehearsal, StepEvent, StepRun

log = logging.getLogger(__name__)
REPLAY_CHUNK = 500
REPLAY_LIMIT = 20000
MAX_MESSAGE_BYTES = 64 * 1024
MAX_SEQ = 2**63 - 1
# daphne (autobahn) refuses to send a WebSocket message over 1 MiB and the socket dies with 1011: a batch is cut
# at this many bytes of JSON (one frame is at most a 64 KiB line piece plus its envelope, so it always fits)
MAX_BATCH_BYTES = 256 * 1024
CLOSE_SESSION_ENDED = 4401


class RehearsalConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        remember_server_loop()
        self.user = self.scope.get("user")
        self.rehearsal_id = int(self.scope["url_route"]["kwargs"]["pk"])
        self.last_sent: dict[int, int] = {}
        if not await database_sync_to_async(can_read)(self.user):
            await self.close(code=4403)
            return
        rehearsal = await database_sync_to_async(Rehearsal.objects.filter(pk=self.rehearsal_id).first)()
        if rehearsal is None:
            await self.close(code=4404)
            return
        self.group = rehearsal.group_name
        self.user_group = user_group_name(self.user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.accept()
        asked = self._parse_after()
        step_runs = await database_sync_to_async(self._step_run_last_seqs)()
        for step_run, last_seq in step_runs.items():
            if step_run not in asked:
                self.last_sent[step_run] = last_seq   # the page reads up to here over the log API
                continue
            self.last_sent[step_run] = asked[step_run]
            if last_seq - asked[step_run] > REPLAY_LIMIT:
                await self.send_json({"type": "skipped", "step_run": step_run, "after": asked[step_run],
                                      "upto": last_seq})
                self.last_sent[step_run] = last_seq
                continue
            while page := await database_sync_to_async(self._page_after)(step_run, self.last_sent[step_run]):
                await self._send_rows(page)
        await self.send_json({"type": "replayed", "last": {str(k): v for k, v in self.last_sent.items()}})

    def _parse_after(self) -> dict[int, int]:
        """``?after=`` as {step_run: seq}; anything that is not an object of integers is ignored entry by
        entry (that step run is then not replayed: it starts at its last seq, as one not named)."""
        qs = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        try:
            raw = json.loads(qs.get("after", ["{}"])[0])
        except (ValueError, RecursionError):
            return {}
        if not isinstance(raw, dict):
            return {}
        after = {}
        for k, v in raw.items():
            try:
                k, v = int(k), int(v)
            except (TypeError, ValueError, OverflowError):
                continue
            if 0 < k <= MAX_SEQ and 0 <= v <= MAX_SEQ:
                after[k] = v
        return after

    def _step_run_last_seqs(self) -> dict[int, int]:
        """Each step run's last seq, read after joining the group: every event committed later is also
        published later, so it reaches this socket live."""
        return dict(StepRun.objects.filter(rehearsal_id=self.rehearsal_id).order_by("pk").values_list(
            "pk", "last_seq"))

    def _page_after(self, step_run: int, after: int) -> list[dict]:
        """At most REPLAY_CHUNK rows of one step run newer than ``after``, filtered and limited by the
        database (the (step_run, seq) unique index), never the whole history in memory."""
        rows = StepEvent.objects.filter(step_run_id=step_run, seq__gt=after).order_by("seq")[:REPLAY_CHUNK]
        return [ev.as_frame() for ev in rows]

    def _gap_page(self, step_run: int, after: int, before: int) -> list[dict]:
        """At most REPLAY_CHUNK rows of the gap (after, before) in the live stream."""
        rows = StepEvent.objects.filter(step_run_id=step_run, seq__gt=after, seq__lt=before).order_by("seq")
        return [ev.as_frame() for ev in rows[:REPLAY_CHUNK]]

    async def _send_rows(self, frames: list[dict]) -> None:
        for f in frames:
            self.last_sent[f["step_run"]] = max(self.last_sent.get(f["step_run"], 0), f["seq"])
        await self._send_batches(frames)

    async def _send_batches(self, frames: list[dict]) -> None:
        """Frames as ``batch`` messages of at most MAX_BATCH_BYTES of JSON each (each frame encoded once)."""
        parts: list[str] = []
        size = 0
        for frame in frames:
            part = json.dumps(frame)
            if parts and size + len(part) > MAX_BATCH_BYTES:
                await self.send(text_data='{"type": "batch", "frames": [' + ", ".join(parts) + "]}")
                parts, size = [], 0
            parts.append(part)
            size += len(part) + 2
        if parts:
            await self.send(text_data='{"type": "batch", "frames": [' + ", ".join(parts) + "]}")

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.channel_layer.group_discard(self.user_group, self.channel_name)

    async def session_ended(self, message: dict) -> None:
        """The user logged out (in any tab, any process): this socket ends with the session."""
        await self.send_json({"type": "session.ended", "reason": "logged out"})
        await self.close(code=CLOSE_SESSION_ENDED)

    async def stream_frames(self, message: dict) -> None:
        out: list[dict] = []
        for frame in message["frames"]:
            if frame.get("type") != "event":
                out.append(frame)
                continue
            sr, seq = frame["step_run"], frame["seq"]
            last = self.last_sent.get(sr, 0)
            if seq <= last:
                continue  # already sent (replay overlapped the live stream)
            if seq > last + 1:
                # the channel layer dropped frames (a slow socket): the rows are in the DB, page them in order
                await self._send_batches(out)
                out = []
                while page := await database_sync_to_async(self._gap_page)(sr, self.last_sent.get(sr, 0), seq):
                    await self._send_rows(page)
            out.append(frame)
            self.last_sent[sr] = seq
        if out:
            await self._send_batches(out)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        """Parse a client message; anything that is not a small JSON object gets an error frame."""
        raw = text_data if text_data is not None else bytes_data
        if raw is None or len(raw) > MAX_MESSAGE_BYTES:
            await self.send_json({"type": "error", "error": f"a message must be JSON of at most "
                                                            f"{MAX_MESSAGE_BYTES} bytes"})
            return
        try:
            content = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            await self.send_json({"type": "error", "error": f"not JSON: {str(exc)[:200]}"})
            return
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "error": "a message must be a JSON object"})
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict, **kwargs) -> None:
        if content.get("type") != "action":
            await self.send_json({"type": "error", "error": f"unknown message type {str(content.get('type'))[:50]!r}"})
            return
        name = content.get("action", "")
        if not isinstance(name, str):
            await self.send_json({"type": "action.result", "action": None, "ok": False,
                                  "error": "action must be a string"})
            return
        refusal = await database_sync_to_async(self._refusal)(content.get("csrf"))
        if refusal:
            await self.send_json({"type": "action.result", "action": name, "ok": False, "error": refusal})
            if refusal == SESSION_GONE:
                await self.close(code=CLOSE_SESSION_ENDED)
            return
        try:
            message = await database_sync_to_async(self._perform)(name, content)
            await self.send_json({"type": "action.result", "action": name, "ok": True, "message": message})
        except (actions.ActionError, PermissionDenied) as exc:
            await self.send_json({"type": "action.result", "action": name, "ok": False, "error": str(exc)})

    def _refusal(self, token) -> str | None:
        """Why this action message may not act, decided now (not when the socket opened)."""
        session = self.scope.get("session")
        if session is None or not session.session_key or not session.exists(session.session_key):
            return SESSION_GONE
        secret = self.scope.get("cookies", {}).get(settings.CSRF_COOKIE_NAME, "")
        if not isinstance(token, str) or not secret or not _csrf_token_matches(token, secret):
            return "the action needs the page's CSRF token in \"csrf\""
        user = _fresh_user(self.user.pk)
        if user is None:
            return SESSION_GONE
        if not can_operate(user):
            return "only members of the 'ops' group can run, approve or change rehearsals"
        return None

    def _perform(self, name: str, content: dict) -> str:
        return actions.perform(self.rehearsal_id, name, _fresh_user(self.user.pk), content)


SESSION_GONE = "your session has ended; log in again"


def _fresh_user(pk: int):
    """The user as the database has it now: groups and permissions are not carried over from the
    object the socket was opened with (they are cached on it)."""
    return get_user_model().objects.filter(pk=pk, is_active=True).first()


def _csrf_token_matches(token: str, secret: str) -> bool:
    try:
        csrf._check_token_format(token)
        csrf._check_token_format(secret)
    except csrf.InvalidTokenFormat:
        return False
    return csrf._does_token_match(token, secret)
