"""docker-compose.yml cannot be run here (no Docker engine), so check it says what the README says."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_has_the_full_stack():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "web", "flower"} <= set(services)
    workers = [s for name, s in services.items() if name.startswith("worker")]
    assert workers and all("-Q" in w["command"] for w in workers), "each worker consumes its hypervisor's queue"
    env = services["web"]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://")
    assert "manage.py serve" in " ".join(services["web"]["command"])
    assert (ROOT / services["web"]["build"] / "Dockerfile").exists()


def test_compose_runs_the_reaper_and_flower():
    import tomllib

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    beat = [s for s in services.values() if "--beat" in s.get("command", [])]
    assert len(beat) == 1, "exactly one scheduler: the lease reaper and the outbox relay run once"
    command = beat[0]["command"]
    assert command[command.index("-Q") + 1] == "understudy", "beat's tasks go to the control queue"
    assert "flower" in services["flower"]["command"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("flower") for d in extras["flower"])
    assert "[flower]" in (ROOT / "Dockerfile").read_text(), "the image installs the flower extra"


# WeasyPrint renders the report's PDF with Pango and HarfBuzz, in DejaVu: without them the web
# container serves every page but fails on each PDF.
PDF_PACKAGES = ("fonts-dejavu-core", "libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz-subset0")


def test_the_image_installs_what_the_pdf_needs_as_setup_does():
    dockerfile = (ROOT / "Dockerfile").read_text().split()
    setup = (ROOT / "scripts" / "setup.sh").read_text().split()
    for package in PDF_PACKAGES:
        assert package in setup, package
        assert package in dockerfile, f"{package} missing from the Dockerfile's apt-get install"
