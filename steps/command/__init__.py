"""``command``: run a shell command on production or on the clone over SSH.

Covers disabling/enabling the broken service and the vendor's procedure. Output
streams line by line; the step fails on timeout or an unexpected exit code.
Cancelling the rehearsal stops the command on its host (its process group gets
SIGTERM, then SIGKILL), not only the worker's end of the connection.
"""
from __future__ import annotations

from rehearsals.writers import cancel_probe
from runbooks.kinds import StepFailed, StepKind, registry
from runbooks.params import Int, Str
from workers.engines.ssh import Cancelled, CommandFailed, CommandTimeout, SSHError

# The volumes a runbook may declare a command's duration grows with: each is measured on
# production ("volume.<name>") and on the workbench the rehearsal ran on ("workbench.<name>").
SCALES_WITH = ("production_bytes", "data_bytes")


@registry.register
class CommandStep(StepKind):
    name = "command"
    label = "Run a command"
    params = {
        "command": Str(required=True, help="Shell command, run by the target's login shell."),
        "timeout": Int(default=600, min=1, max=7 * 24 * 3600, help="Seconds before the command is abandoned."),
        "expect_exit": Int(default=0, min=0, max=255, help="Exit code that means success."),
        "scales_with": Str(choices=SCALES_WITH, help="What the command's duration grows with, for the "
                                                     "report's estimate: production_bytes (the whole host) or "
                                                     "data_bytes (the datafiles). Unset: its measured duration."),
    }

    def summary(self, params):
        return params.get("command", "")

    def run(self, ctx):
        p = ctx.params
        endpoint = ctx.endpoint()
        ctx.emitter.log(f"$ {p['command']}   # on {endpoint}", "info")
        try:
            with ctx.connect(endpoint) as session:
                result = session.run(p["command"], emitter=ctx.emitter, timeout=p["timeout"],
                                     expect_exit=p["expect_exit"], cancelled=cancel_probe(ctx))
        except Cancelled as exc:
            raise StepFailed(f"cancelled: {exc}", {"command": p["command"], "cancelled": True}) from exc
        except CommandFailed as exc:
            raise StepFailed(str(exc), exc.result.as_dict()) from exc
        except CommandTimeout as exc:
            raise StepFailed(str(exc), {"command": p["command"], "timed_out": True}) from exc
        except SSHError as exc:
            raise StepFailed(str(exc)) from exc
        out = result.as_dict()
        if p.get("scales_with"):
            out["scales_with"] = p["scales_with"]
        return out
