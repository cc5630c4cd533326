"""Live stream of a rehearsal to the browser, and the same actions as the UI.

On connect the client says what it already has (``?after={"<step_run>": seq}``);
the consumer joins the group first, then replays newer rows from the DB, then
streams live frames. Frames are deduplicated by (step_run, seq) and a gap in
the live stream is filled from the DB, so the browser sees every event once,
in order. Reading needs ops or managers; actions need ops (same checks as views).
"""
from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import PermissionDenied

from accounts.roles import can_operate, can_read

from . import actions
from .events import remember_server_loop
from .models import Rehearsal, StepEvent, StepRun

log = logging.getLogger(__name__)
REPLAY_CHUNK = 500


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
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        after = self._parse_after()
        self.last_sent.update(after)
        rows = await database_sync_to_async(self._rows_after)(after)
        await self._send_rows(rows)
        await self.send_json({"type": "replayed", "last": {str(k): v for k, v in self.last_sent.items()}})

    def _parse_after(self) -> dict[int, int]:
        qs = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            raw = json.loads(qs.get("after", ["{}"])[0])
            return {int(k): int(v) for k, v in raw.items()}
        except (ValueError, AttributeError):
            return {}

    def _rows_after(self, after: dict[int, int]) -> list[dict]:
        """Rows newer than what the client has, per step run, filtered by the database
        (the (step_run, seq) unique index), not in Python."""
        frames = []
        for step_run in StepRun.objects.filter(rehearsal_id=self.rehearsal_id).order_by("pk").values_list(
                "pk", flat=True):
            rows = StepEvent.objects.filter(step_run_id=step_run, seq__gt=after.get(step_run, 0)).order_by("seq")
            frames += [ev.as_frame() for ev in rows.iterator(chunk_size=2000)]
        return frames

    def _gap_rows(self, step_run: int, after: int, before: int) -> list[dict]:
        return [ev.as_frame() for ev in StepEvent.objects.filter(step_run_id=step_run, seq__gt=after,
                                                                 seq__lt=before).order_by("seq")]

    async def _send_rows(self, frames: list[dict]) -> None:
        for i in range(0, len(frames), REPLAY_CHUNK):
            chunk = frames[i:i + REPLAY_CHUNK]
            for f in chunk:
                self.last_sent[f["step_run"]] = max(self.last_sent.get(f["step_run"], 0), f["seq"])
            await self.send_json({"type": "batch", "frames": chunk})

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

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
                out += await database_sync_to_async(self._gap_rows)(sr, last, seq)
            out.append(frame)
            self.last_sent[sr] = seq
        if out:
            await self.send_json({"type": "batch", "frames": out})

    async def receive_json(self, content: dict, **kwargs) -> None:
        if content.get("type") != "action":
            await self.send_json({"type": "error", "error": f"unknown message type {content.get('type')!r}"})
            return
        name = content.get("action", "")
        if not await database_sync_to_async(can_operate)(self.user):
            await self.send_json({"type": "action.result", "action": name, "ok": False,
                                  "error": "only members of the 'ops' group can run, approve or change rehearsals"})
            return
        try:
            message = await database_sync_to_async(actions.perform)(self.rehearsal_id, name, self.user, content)
            await self.send_json({"type": "action.result", "action": name, "ok": True, "message": message})
        except (actions.ActionError, PermissionDenied) as exc:
            await self.send_json({"type": "action.result", "action": name, "ok": False, "error": str(exc)})
