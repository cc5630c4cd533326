"""``manage.py demo``: the whole product on one machine, on the embedded defaults.

Migrates, creates users (an admin, ops, a second ops for four-eyes approvals, a manager;
both ops may start production runs),
starts a real sshd "production host" (own rootfs, namespaces, host key) whose
little database has a few corrupted datafiles, registers it with its pinned key,
registers the best hypervisor available, opens an incident with a dress rehearsal
of the seed runbook, then serves the dashboard with an in-process worker.
"""
from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from accounts.roles import ADMINS, MANAGERS, OPS
from incidents.models import Incident
from inventory.models import Hypervisor, ProductionHost
from rehearsals import incident_lifecycle, transitions
from runbooks.models import Runbook, StepSpec
from runbooks.seed import SEED_NAME, load_seed_runbook

from .serve import serve

DEMO_HOST = "demo-production"


class Command(BaseCommand):
    help = "Run the dashboard with a demo production host and a ready-to-start rehearsal."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-serve", action="store_true", help="Set everything up, print it, and exit "
                                                                    "(the production host stops with it).")
        parser.add_argument("--password", help="Use this password for the demo users instead of random ones.")

    def handle(self, *args, host, port, no_serve, password, **options):
        call_command("migrate", verbosity=0, interactive=False)
        creds = self._users(password)
        hv = self._hypervisor()
        # With a real hypervisor the demo host carries a kernel in /boot, so its clone boots.
        prod = self._production_host(with_boot=not hv.is_test_driver)
        rehearsal = self._incident(prod, hv, creds)
        self._banner(host, port, creds, prod, hv, rehearsal)
        if no_serve:
            return
        try:
            serve(host, port, inprocess_worker=True)
        finally:
            self.test_host.stop()

    # ------------------------------------------------------------------ pieces
    def _users(self, password: str | None) -> dict[str, str]:
        """admin manages accounts and inventory and is not ops; ops and ops2 run and approve (neither can
        create a user, so neither can mint the second pair of eyes); manager reads."""
        groups = {name: Group.objects.get_or_create(name=name)[0] for name in (ADMINS, OPS, MANAGERS)}
        run_production = Permission.objects.filter(content_type__app_label="rehearsals", codename="run_production")
        creds = {}
        for name, group, staff, superuser in (("admin", ADMINS, True, True), ("ops", OPS, True, False),
                                              ("ops2", OPS, True, False), ("manager", MANAGERS, False, False)):
            user, _ = User.objects.get_or_create(username=name)
            pw = password or secrets.token_urlsafe(9)
            user.set_password(pw)
            user.is_staff = staff  # ops edit runbooks in the admin; admin edits users, groups and inventory
            user.is_superuser = superuser
            user.save()
            user.groups.set([groups[group]])
            user.user_permissions.set(run_production if group == OPS else [])
            creds[name] = pw
        return creds

    def _production_host(self, *, with_boot: bool):
        # The test bed (sshd hosts, minidb) lives beside the product in the source tree and is
        # not installed with it: only the demo and the tests use it.
        try:
            from testbed.host import TestHost, TestHostError
        except ImportError as exc:
            raise CommandError("the demo needs the test bed (testbed/ in the source tree): run it from a "
                               f"checkout of understudy ({exc})") from exc

        workdir = Path(settings.UNDERSTUDY_DATA_DIR) / "demo" / "production"
        if workdir.exists():
            subprocess.run(["rm", "-rf", str(workdir)], check=True)
        self.stdout.write("Starting the demo production host (sshd + minidb in their own namespaces)...")
        try:
            self.test_host = TestHost(workdir, hostname="db-prod-01", scenario=True, with_boot=with_boot).start()
        except TestHostError as exc:
            raise CommandError(f"could not start the demo production host: {exc}")
        h = self.test_host
        prod, _ = ProductionHost.objects.update_or_create(name=DEMO_HOST, defaults=dict(
            address=h.address, port=h.port, user=h.user, key_path=str(h.client_key_path),
            host_key=h.host_public_key,
            notes="Demo host started by manage.py demo: a real sshd serving a small rootfs whose minidb "
                  "has corrupted datafiles."))
        return prod

    def _hypervisor(self):
        storage = Path(settings.UNDERSTUDY_DATA_DIR) / "hypervisor"
        storage.mkdir(parents=True, exist_ok=True)
        uri, note = "test:///default", "libvirt's test driver (no VMs really boot)"
        script = Path(settings.BASE_DIR) / "scripts" / "libvirt-up.sh"
        if os.geteuid() == 0 and script.exists():
            res = subprocess.run([str(script)], capture_output=True, text=True)
            if res.returncode == 0:
                uri, note = "qemu:///system", "local libvirtd, qemu under TCG unless KVM works"
            else:
                self.stderr.write(f"libvirtd could not be started, using the test driver: "
                                  f"{(res.stderr or res.stdout).strip()[-300:]}")
        hv, _ = Hypervisor.objects.update_or_create(name="local", defaults=dict(
            libvirt_uri=uri, queue="hv-local", storage_dir=str(storage), notes=note))
        self.hypervisor_note = note
        return hv

    def _incident(self, prod, hv, creds):
        ops = User.objects.get(username="ops")
        runbook = Runbook.objects.filter(name=SEED_NAME).order_by("-version").first() or \
            load_seed_runbook(Runbook, StepSpec, ops)
        scenario = self.test_host.scenario
        incident = incident_lifecycle.open_incident(Incident(
            title="minidb down on db-prod-01: corrupted datafiles", production_host=prod, broken_service="minidb",
            severity=Incident.Severity.SEV2, restoration_target_minutes=240,  # the window the vendor asked for
            description="The database service fails its checks; the vendor says: re-initialize from the latest "
                        "backup. Everything else on the host keeps serving. "
                        f"(Demo: {len(scenario.corrupted_files)} of {len(scenario.files)} datafiles have bad pages, "
                        f"{len(scenario.newer_files)} only received newer writes since the backup.)"), ops)
        return transitions.create_rehearsal(incident, runbook, hv, ops)

    def _banner(self, host, port, creds, prod, hv, rehearsal):
        url = f"http://{host}:{port}"
        h = self.test_host
        w = self.stdout.write
        w("")
        w(self.style.SUCCESS("understudy demo is ready"))
        w(f"  dashboard:        {url}/")
        w(f"  dress rehearsal:  {url}{rehearsal.get_absolute_url()}  (production is not changed; when it "
          f"succeeds, 'Run for real on production' continues on its repaired workbench)")
        w(f"  REST API:         {url}/api/v1/  (docs: {url}/api/v1/docs/; tokens: {url}/account/api-tokens/)")
        w(f"  users:            admin / {creds['admin']}    (users, groups, inventory; not ops)")
        w(f"                    ops / {creds['ops']}      (runs steps, edits runbooks)")
        w(f"                    ops2 / {creds['ops2']}     (second ops member: approves sync-back)")
        w(f"                    manager / {creds['manager']}  (read-only)")
        w(f"  production host:  {prod.address}:{prod.port} key {prod.host_key_fingerprint}"
          f"{'' if h.netns_name else ' (loopback: ' + str(h.netns_fallback_reason) + ')'}")
        w(f"  hypervisor:       {hv.libvirt_uri} — {self.hypervisor_note}")
        w("  Ctrl-C stops the dashboard and the demo host.")
        w("")
