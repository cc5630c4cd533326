"""What the incident report reads from a live catch-up: the backlog D₀, the apply rate R
and the churn c, and the catch-up time T = D₀ ÷ (R − c) — which does not exist when
c ≥ R (it never converges), and the report says so instead of printing a number."""
from __future__ import annotations

from runbooks.kinds import StepReport, fact

from . import LiveSyncStep


class LiveSyncReport(StepReport):
    def facts(self, result, seconds, data):
        passes = result.get("passes")
        if passes:  # file delta passes: the first pass moves the backlog, the next one sees the churn
            first = passes[0]
            took = first.get("seconds") or 0.0
            churn = (passes[1].get("moved_bytes") or 0) / took if len(passes) > 1 and took else 0.0
            return {
                "backlog": fact("backlog D₀ (first pass)", first.get("moved_bytes"), "bytes"),
                "apply_rate": fact("apply rate R", (first.get("data_bytes") or 0) / took if took else None,
                                   "bytes/s"),
                "churn": fact("churn c (moved during the first pass)", churn, "bytes/s"),
                "passes": fact("passes", len(passes)),
            }
        lags = result.get("lags") or []
        took = result.get("seconds") or seconds or 0.0
        if not lags:
            return {}
        backlog, last = max(lags), lags[-1]
        # The vendor's output gives the lag only: its decrease is the net rate R − c.
        return {
            "backlog": fact("backlog D₀ (largest lag)", backlog, "lsn"),
            "net_rate": fact("net catch-up rate R − c", (backlog - last) / took if took else None, "lsn/s"),
            "last_lag": fact("lag at the end", last, "lsn"),
        }

    def project(self, facts, seconds, volumes, *, rate_factor=1.0):
        backlog = (facts.get("backlog") or {}).get("value")
        if backlog is None:
            return seconds, "measured duration"
        if "apply_rate" in facts:
            rate = ((facts["apply_rate"] or {}).get("value") or 0.0) * rate_factor
            churn = (facts.get("churn") or {}).get("value") or 0.0
            if churn >= rate:
                return None, f"does not converge: churn {churn:,.0f} B/s ≥ apply rate {rate:,.0f} B/s"
            if not backlog:
                return seconds, "nothing to catch up; measured duration"
            return backlog / (rate - churn), f"D₀ {backlog:,} B ÷ (R {rate:,.0f} − c {churn:,.0f} B/s)"
        net = ((facts.get("net_rate") or {}).get("value") or 0.0) * rate_factor
        if net <= 0:
            return None, "does not converge: the lag did not shrink (c ≥ R)"
        return backlog / net, (f"D₀ {backlog:,} ÷ (R − c) {net:,.0f}/s (the vendor reports lag only, "
                               f"so the churn is inside the net rate)")


LiveSyncStep.report = LiveSyncReport()
