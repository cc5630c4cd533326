"""No built-in secret key; a placeholder key is refused outside debug; the production profile passes
``manage.py check --deploy`` with nothing to report; docker-compose takes the key from the environment."""
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _manage(tmp_path, *args, **env):
    base = {k: v for k, v in os.environ.items()
            # DJANGO_ALLOW_ASYNC_UNSAFE: set by the browser tests' conftest in this process, never in a deployment
            if k not in {"SECRET_KEY", "DEBUG", "UNDERSTUDY_PROFILE", "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE",
                         "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    base.update(UNDERSTUDY_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=base, capture_output=True,
                          text=True, timeout=120)


def test_a_placeholder_key_is_refused_when_debug_is_off(tmp_path):
    for key in ("change-me", "understudy-dev-only-insecure-key-change-me", "short"):
        res = _manage(tmp_path, "check", SECRET_KEY=key)
        assert res.returncode != 0
        assert "ImproperlyConfigured" in res.stderr and "refusing to start with an insecure SECRET_KEY" in res.stderr


def test_debug_may_use_a_placeholder_key(tmp_path):
    res = _manage(tmp_path, "check", SECRET_KEY="change-me", DEBUG="on")
    assert res.returncode == 0, res.stderr


def test_the_embedded_profile_generates_a_private_key_once(tmp_path):
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = _manage(tmp_path, "shell", "--no-imports", "-c", code)
    second = _manage(tmp_path, "shell", "--no-imports", "-c", code)
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "data" / "secret_key"
    assert first.stdout.strip() == second.stdout.strip() == key_file.read_text().strip()
    assert len(first.stdout.strip()) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_an_existing_data_dir_is_made_private(tmp_path):
    (tmp_path / "data").mkdir(mode=0o755)
    (tmp_path / "data").chmod(0o755)
    assert _manage(tmp_path, "check").returncode == 0
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_the_production_profile_needs_the_key_from_the_environment(tmp_path):
    res = _manage(tmp_path, "check", UNDERSTUDY_PROFILE="production", ALLOWED_HOSTS="understudy.example")
    assert res.returncode != 0 and "SECRET_KEY is not set" in res.stderr
    assert not (tmp_path / "data" / "secret_key").exists()


def test_the_production_profile_passes_check_deploy_silently(tmp_path):
    res = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", UNDERSTUDY_PROFILE="production",
                  SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="understudy.example")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "System check identified no issues (0 silenced)."
    assert res.stderr == ""


def test_the_production_profile_refuses_debug(tmp_path):
    res = _manage(tmp_path, "check", UNDERSTUDY_PROFILE="production", DEBUG="on",
                  SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="understudy.example")
    assert res.returncode != 0 and "DEBUG" in res.stderr


def test_docker_compose_requires_the_key_and_runs_the_production_profile():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text
    env = yaml.safe_load(text)["services"]["web"]["environment"]
    assert env["UNDERSTUDY_PROFILE"] == "production"
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert env["ALLOWED_HOSTS"] != "*" and "*" not in env["UNDERSTUDY_ALLOWED_ORIGINS"]
