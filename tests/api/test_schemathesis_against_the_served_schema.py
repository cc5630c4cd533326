"""schemathesis against the schema the live server serves, as ops and as a manager (each with an API token):
every operation with generated valid and invalid requests — no 5xx, every response as the schema describes it
(status code, content type, body, headers), invalid input refused, no route that answers without credentials.

Bounded and deterministic for CI: ``MAX_EXAMPLES`` per operation, derandomized. The requests change the fixture
data (the security suites' ``world``: runs awaiting approval, pending, a published report…) as a script could;
the work they queue goes to a hypervisor queue no worker consumes here, and its steps touch no host, so nothing
waits on SSH. Path ids are drawn from the fixture's objects as well as generated, so operations reach real rows."""
from __future__ import annotations

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from accounts import tokens

pytestmark = pytest.mark.django_db(transaction=True)

MAX_EXAMPLES = 20


def _known_ids(world) -> dict[str, list[int]]:
    return {"incidents": [world["pending"].incident_id, world["awaiting"].incident_id],
            "hosts": [world["pending"].incident.production_host_id], "hypervisors": [world["hv"].pk],
            "runbooks": [world["pending"].runbook_id, world["awaiting"].runbook_id],
            "rehearsals": [world["awaiting"].pk, world["pending"].pk, world["pending_production"].pk],
            "step-runs": [world["run"].pk], "findings": [world["finding"].pk],
            "approvals": [world["run"].approvals.get().pk], "timeline": [world["awaiting"].timeline.first().pk],
            "reports": [world["report"].pk], "item": [world["item"].pk], "number": [1]}


@pytest.mark.parametrize("role", ["ops", "manager"])
def test_the_api_conforms_to_its_schema(live_server, world, ops_permissions, role):
    _, token = tokens.issue(world["users"][role], f"schemathesis as {role}", days=1)
    auth = {"Authorization": f"Bearer {token}"}
    config = schemathesis.Config.from_dict({
        "headers": auth,
        "generation": {"with-security-parameters": False},  # our token, always (ignored_auth tries without it)
        # A request the schema allows may still be malformed for the action it names (each action and each step
        # kind takes its own inputs, described in the operation's text): 400 is the right answer, not a 2xx.
        "checks": {"positive_data_acceptance": {"enabled": False}},
    })
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/?format=json", headers=auth,
                                           config=config)
    ids = _known_ids(world)

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        """Each generated path also in a version that names the fixture's objects."""
        if not path_parameters:
            return st.just(path_parameters)
        resource = context.operation.path.split("/")[3]
        known = dict(path_parameters)
        for name in known:
            pool = ids.get(name) or (ids.get(resource) if name == "id" else None)
            if pool:
                known[name] = pool[0]
        return st.sampled_from([path_parameters, known])

    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(case=cases)
        def check(case):
            case.call_and_validate(timeout=30)

        try:
            check()
        except Exception as exc:  # one operation's failure is reported with the others', not instead of them
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 36
    assert failures == [], "\n\n".join(failures)
