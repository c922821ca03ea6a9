"""The `windflow` CLI as a person and a script meet it: errors, settings, exit codes, output, completion, help."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest_asyncio
import yaml
from typer.testing import CliRunner

from tests.conftest import mint_token
from tests.live_server import LiveServer
from tests.servers import free_port

WINDFLOW_SCRIPT = shutil.which("windflow", path=os.path.dirname(sys.executable))


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with no windflow settings (plus ``extra``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINDFLOW_")}
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_CACHE_HOME=str(tmp_path / "cache"), COLUMNS="200", NO_COLOR="1"
    )
    env.update(extra)
    return env


def store_login(tmp_path: Path, api_url: str, access_token: str = "stored-token") -> None:
    path = tmp_path / "config" / "windflow" / "credentials.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"api_url": api_url, "username": "sam", "access_token": access_token}))


def windflow(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real console script in a child process (exit code through ``os._exit``, output as a terminal gets it)."""
    assert WINDFLOW_SCRIPT, "the windflow console script is not installed next to this Python"
    return subprocess.run(
        [WINDFLOW_SCRIPT, *args],
        env=cli_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- the API is down


def test_api_down_is_one_line_naming_the_url_and_the_setting_exit_3(tmp_path):
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}"
    r = windflow(tmp_path, "services", "--api", url)
    assert r.returncode == 3, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert url in lines[0] and "--api" in lines[0] and "Traceback" not in r.stderr + r.stdout
    # the event stream too (it reconnects only to an API that answered once)
    r = windflow(tmp_path, "events", "tail", "--api", url)
    assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1 and url in r.stderr, (r.stdout, r.stderr)

    # WINDFLOW_API_PORT is honoured though a login is stored for another URL, and the message says where the URL
    # came from, so the user knows what to change
    store_login(tmp_path, "http://127.0.0.1:1")
    r = windflow(tmp_path, "init", "list", WINDFLOW_API_PORT=str(port))
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and url in r.stderr and "WINDFLOW_API_PORT" in r.stderr


def test_api_url_precedence_flag_env_settings_login_default(tmp_path, monkeypatch):
    from windflow.cli.client import resolve_api, token

    for name in ("WINDFLOW_API_URL", "WINDFLOW_PUBLIC_URL", "WINDFLOW_API_HOST", "WINDFLOW_API_PORT", "WINDFLOW_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    assert resolve_api() == ("http://127.0.0.1:8000", "the default")
    store_login(tmp_path, "https://windflow.example/")
    assert resolve_api() == ("https://windflow.example", "the stored login (`windflow login`)")
    monkeypatch.setenv("WINDFLOW_API_PORT", "9123")
    assert resolve_api() == ("http://127.0.0.1:9123", "WINDFLOW_API_PORT")
    monkeypatch.setenv("WINDFLOW_API_URL", "http://10.0.0.9:8000/")
    assert resolve_api() == ("http://10.0.0.9:8000", "WINDFLOW_API_URL")
    assert resolve_api("http://flag:1") == ("http://flag:1", "--api")
    # the stored token goes only to the URL that issued it
    assert token(base="https://windflow.example") == "stored-token"
    assert token(base="http://127.0.0.1:9123") is None
    monkeypatch.setenv("WINDFLOW_TOKEN", "from-env")
    assert token(base="http://127.0.0.1:9123") == "from-env"


# --------------------------------------------------------------------------- against a real API


@pytest_asyncio.fixture(loop_scope="session")
async def live(settings, app_resources):
    from windflow.api.app import create_app

    async with LiveServer(create_app(settings, resources=app_resources)) as server:
        yield server


async def _record_run(db, status: str) -> str:
    from windflow.persistence.repositories import RunSummaryRepository

    run_id = f"{status.lower()}-{uuid.uuid4().hex[:8]}"
    async with db.write() as session:
        await RunSummaryRepository().upsert(
            session=session,
            run_id=run_id,
            kind="initialization",
            workflow_id=f"init/{run_id}",
            status=status,
            actor="tester",
            finished_at=datetime.now(UTC),
        )
    return run_id


async def invoke(tmp_path: Path, *args: str, **env: str):
    """The CLI in this process (in a thread: the API under test runs on this event loop)."""
    from windflow.cli.main import app as cli

    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=cli_env(tmp_path, **env))


async def test_status_exit_codes_json_yaml_and_choices(live, settings, db, api, tmp_path):
    token = mint_token(settings)
    for sid, port in (("db", 9501), ("web", 9502)):
        body = {
            "id": sid,
            "driver": "process",
            "config": {"command": ["python3", "-m", "http.server", str(port)]},
            "health": {"kind": "tcp", "port": port},
        }
        assert (await api.post("/api/v1/services", json=body)).status_code == 201
    failed, succeeded = await _record_run(db, "FAILED"), await _record_run(db, "SUCCEEDED")
    env = {"WINDFLOW_API_URL": live.http_url, "WINDFLOW_TOKEN": token}

    r = await invoke(tmp_path, "init", "status", failed, **env)
    assert r.exit_code == 1 and "FAILED" in r.output, r.output
    r = await invoke(tmp_path, "init", "status", succeeded, **env)
    assert r.exit_code == 0 and "SUCCEEDED" in r.output, r.output
    r = await invoke(tmp_path, "init", "status", failed, "-o", "json", **env)
    assert r.exit_code == 1 and json.loads(r.stdout)["status"] == "FAILED", r.output

    r = await invoke(tmp_path, "services", "-o", "json", **env)
    assert r.exit_code == 0, r.output
    assert sorted(s["id"] for s in json.loads(r.stdout)) == ["db", "web"]
    r = await invoke(tmp_path, "init", "list", "-o", "yaml", "--status", "failed", **env)
    assert r.exit_code == 0, r.output
    assert [run["run_id"] for run in yaml.safe_load(r.stdout)] == [failed]
    r = await invoke(tmp_path, "services", "--state", "healthy", "-o", "json", **env)
    assert r.exit_code == 0 and json.loads(r.stdout) == [], r.output

    # a state that does not exist is a usage error, not an empty table
    for args in (
        ("services", "--state", "nonsense"),
        ("init", "list", "--status", "nonsense"),
        ("init", "start", "--on-failure", "maybe"),
        ("services", "-o", "xml"),
    ):
        r = await invoke(tmp_path, *args, **env)
        assert r.exit_code == 2 and args[-1] in r.output, (args, r.output)
    r = await invoke(tmp_path, "init", "status", "no-such-run", **env)  # a 404: exit 2
    assert r.exit_code == 2 and "not found" in r.output, r.output


async def test_completion_offers_service_ids_from_the_api_through_a_cache(live, settings, api, tmp_path, monkeypatch):
    from windflow.cli import completion

    token = mint_token(settings)
    for sid in ("alpha", "beta"):
        body = {"id": sid, "driver": "process", "config": {"command": ["python3", "-m", "http.server", "9600"]}}
        assert (await api.post("/api/v1/services", json=body)).status_code == 201
    env = cli_env(tmp_path, WINDFLOW_API_URL=live.http_url, WINDFLOW_TOKEN=token)

    def tab(*words: str) -> list[str]:
        """What bash completion gets for the last word (the real console script, the real protocol)."""
        assert WINDFLOW_SCRIPT
        line = ["windflow", *words]
        r = subprocess.run(
            [WINDFLOW_SCRIPT],
            env={
                **env,
                "_WINDFLOW_COMPLETE": "complete_bash",
                "COMP_WORDS": " ".join(line),
                "COMP_CWORD": str(len(line) - 1),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert await asyncio.to_thread(tab, "recover", "") == ["alpha", "beta"]
    assert await asyncio.to_thread(tab, "service", "restart", "b") == ["beta"]
    assert await asyncio.to_thread(tab, "config", "rollouts", "al") == ["alpha"]
    assert await asyncio.to_thread(tab, "services", "--state", "back") == ["backing_off"]

    # the ids are cached per URL: a new service shows once the cache is stale, not on every Tab
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cached = json.loads(completion.cache_path().read_text())[live.http_url]
    assert cached["ids"] == ["alpha", "beta"]
    body = {"id": "gamma", "driver": "process", "config": {"command": ["python3", "-m", "http.server", "9600"]}}
    assert (await api.post("/api/v1/services", json=body)).status_code == 201
    now = cached["at"] + 1
    assert await asyncio.to_thread(completion.service_ids, now=now) == ["alpha", "beta"]
    later = cached["at"] + completion.FRESH_FOR + 1
    assert await asyncio.to_thread(completion.service_ids, now=later) == ["alpha", "beta", "gamma"]
    # the API gone: the last known ids, never an error
    assert await asyncio.to_thread(completion.service_ids, f"http://127.0.0.1:{free_port()}") == []
    monkeypatch.setenv("WINDFLOW_TOKEN", "bogus")
    assert await asyncio.to_thread(completion.service_ids, now=later + completion.FRESH_FOR + 1) == [
        "alpha",
        "beta",
        "gamma",
    ]


# --------------------------------------------------------------------------- display


def test_help_has_no_type_labels_and_shows_choices(tmp_path):
    import typer.main

    from windflow.cli.main import app as cli

    runner = CliRunner()
    group = typer.main.get_command(cli)
    paths: list[list[str]] = []

    def walk(command, prefix: list[str]) -> None:
        paths.append(prefix)
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, [*prefix, name])

    walk(group, [])
    assert len(paths) > 25
    for path in paths:
        r = runner.invoke(cli, [*path, "--help"], env=cli_env(tmp_path))
        assert r.exit_code == 0, (path, r.output)
        for label in ("<bool>", "<str>", "<int>", "<float>", "<list", "<Path>", "<path>"):
            assert label not in r.output, (path, label, r.output)
    r = runner.invoke(cli, ["services", "--help"], env=cli_env(tmp_path))
    assert "[table|json|yaml]" in r.output and "backing_off" in r.output


def test_progress_bar_and_table_header_are_on_separate_lines():
    from rich.console import Console

    from windflow.cli.init import render

    run = {
        "run_id": "r1",
        "status": "RUNNING",
        "progress": 40,
        "links": {},
        "state": {
            "message": "starting web",
            "components": {
                "db": {"name": "db", "layer": 0, "status": "HEALTHY", "attempts": 1},
                "web": {"name": "web", "layer": 1, "status": "STARTING", "attempts": 1},
            },
        },
    }
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(render(run))
    lines = out.getvalue().splitlines()
    header = next(i for i, ln in enumerate(lines) if "component" in ln)
    assert lines[header].split() == ["component", "layer", "status", "attempts", "time", "detail"], lines
    assert "━" not in lines[header] and any("━" in ln for ln in lines[:header]), lines


def test_cli_choices_match_the_domain():
    from windflow.cli.events import EVENT_TYPES
    from windflow.cli.init import INIT_STATUSES
    from windflow.cli.ops import SERVICE_STATES
    from windflow.domain.contracts import InitStatus
    from windflow.domain.events import EventType
    from windflow.domain.models import ServiceState

    assert set(SERVICE_STATES) == {s.value for s in ServiceState}
    assert set(INIT_STATUSES) == {s.value for s in InitStatus}
    assert set(EVENT_TYPES) == {t.value for t in EventType}


def test_cli_starts_without_heavy_imports(tmp_path):
    """Commands that talk to the API (and completion) start without loading settings, pydantic or rich."""
    code = (
        "import sys; from windflow.cli.main import app; "
        "heavy = [m for m in ('windflow.settings', 'pydantic', 'sqlalchemy', 'httpx2', 'asyncio', 'websockets') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    r = subprocess.run([sys.executable, "-c", code], env=cli_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "", (r.stdout, r.stderr)


def test_fast_completion_table_matches_the_app_and_answers_like_typer(tmp_path, monkeypatch):
    """Each command the fast path answers for takes a service id there in the Typer app (same completer), and
    for bash and zsh it prints exactly what the app prints."""
    import contextlib
    import time

    import typer.main

    from windflow.cli import completion, fastcomplete
    from windflow.cli.client import complete_service
    from windflow.cli.main import app as cli

    group = typer.main.get_command(cli)

    def command(path: tuple[str, ...]):
        cmd = group
        for name in path:
            cmd = cmd.commands[name]
        return cmd

    def completer(param):
        return getattr(param, "_custom_shell_complete", None)

    for path in fastcomplete.SERVICE_ARGUMENT:
        first = next(p for p in command(path).params if p.param_type_name == "argument")
        assert completer(first) is not None, path
    for path, options in fastcomplete.SERVICE_OPTION.items():
        param = next(p for p in command(path).params if set(p.opts) & options)
        assert set(param.opts) == options and completer(param) is not None, path
    assert complete_service  # the completer both paths share

    for key, value in cli_env(tmp_path, WINDFLOW_API_URL="http://127.0.0.1:1").items():
        monkeypatch.setenv(key, value)
    cache = completion.cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"http://127.0.0.1:1": {"at": time.time(), "ids": ["api", "app", "db"]}}))
    cases = [
        {"_WINDFLOW_COMPLETE": "complete_bash", "COMP_WORDS": "windflow recover a", "COMP_CWORD": "2"},
        {"_WINDFLOW_COMPLETE": "complete_bash", "COMP_WORDS": "windflow service stop ", "COMP_CWORD": "3"},
        {"_WINDFLOW_COMPLETE": "complete_bash", "COMP_WORDS": "windflow init start -c db -c ", "COMP_CWORD": "6"},
        {"_WINDFLOW_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "windflow config apply "},
        {"_WINDFLOW_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "windflow events tail -s d"},
        {"_WINDFLOW_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "windflow recover x"},
    ]
    for case in cases:
        fast = fastcomplete.try_complete(case)
        assert fast is not None, case
        for key, value in case.items():
            monkeypatch.setenv(key, value)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            cli(prog_name="windflow", args=[])
        assert fast == out.getvalue().rstrip("\n"), case
        for key in case:
            monkeypatch.delenv(key)
    # other positions are left to the app
    for words in (
        "windflow ",
        "windflow recover --reason ",
        "windflow recover --api http://x ",
        "windflow services --state ",
        "windflow recover api ",
    ):
        assert (
            fastcomplete.try_complete(
                {"_WINDFLOW_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()))}
            )
            is None
        ), words


async def test_mistakes_found_by_a_new_user_are_one_line_and_exit_2(live, settings, db, tmp_path):
    """export to an unwritable path printed a traceback; `events tail --type NOPE` cut the list of known types
    (a WebSocket close reason holds 123 bytes)."""
    token = mint_token(settings)
    result = await invoke(
        tmp_path,
        "export",
        "-o",
        str(tmp_path / "no" / "such" / "dir.yaml"),
        "--api",
        live.http_url,
        WINDFLOW_TOKEN=token,
    )
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "cannot write" in result.output and "No such file or directory" in result.output
    result = await invoke(tmp_path, "events", "tail", "--type", "NOPE", "--api", live.http_url, WINDFLOW_TOKEN=token)
    assert result.exit_code == 2 and "unknown event type NOPE" in result.output
    assert "AUDIT" in result.output and "SHUTDOWN_UPDATE" in result.output  # the whole list


async def test_an_initialization_of_an_unknown_component_is_refused_up_front(live, api, settings, db, tmp_path):
    """`init start -c nosuch` started a run that failed and stayed in the history as FAILED."""
    resp = await api.post("/api/v1/initializations", json={"components": ["nosuch"]})
    assert resp.status_code == 422 and resp.json()["error"]["details"][0]["loc"] == ["body", "components", "nosuch"]
    assert (await api.get("/api/v1/initializations")).json()["items"] == []  # nothing started, nothing recorded
    result = await invoke(
        tmp_path, "init", "start", "-c", "nosuch", "--api", live.http_url, WINDFLOW_TOKEN=mint_token(settings)
    )
    assert result.exit_code == 2 and "unknown services: nosuch" in result.output, result.output


# --------------------------------------------------------------------------- found by a new user's trial (2)


def test_usage_errors_are_one_line_like_the_other_errors(tmp_path):
    """A usage error was five lines: the usage, a "Try ... --help" line and the message in a box, unlike every
    other error of the CLI (``error <what is wrong>``)."""
    for args, words in (
        (("services", "--foo"), "No such option: --foo"),
        (("services", "-o", "xml"), "'xml' is not one of 'table', 'json', 'yaml'"),
        (("config", "apply"), "Missing argument 'SERVICE'"),
        (("servics",), "No such command 'servics'"),
    ):
        r = windflow(tmp_path, *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (args, r.stderr)
        assert lines[0].startswith("error ") and words in lines[0] and "--help" in lines[0], (args, r.stderr)
        assert "Value error" not in lines[0] and "╭" not in r.stderr and r.stdout == "", (args, r.stderr)
    r = windflow(tmp_path, "config")  # no arguments: the help, as before
    assert r.returncode == 2 and "apply" in r.stdout + r.stderr


async def test_piped_tables_show_whole_ids(live, settings, api, tmp_path):
    """Piped into grep or a file (not a terminal), a table was drawn 80 columns wide (or $COLUMNS) and cut ids to
    ``web-…``."""
    long_id = "checkout-payments-gateway-primary-eu-west-1-canary"
    body = {
        "id": long_id,
        "driver": "process",
        "config": {"command": ["python3", "-m", "http.server", "9503"]},
        "health": {"kind": "tcp", "port": 9503},
        "depends_on": [],
    }
    assert (await api.post("/api/v1/services", json=body)).status_code == 201
    r = await asyncio.to_thread(
        windflow, tmp_path, "services", "--api", live.http_url, WINDFLOW_TOKEN=mint_token(settings), COLUMNS="80"
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert long_id in r.stdout and "…" not in r.stdout, r.stdout


async def test_events_tail_of_an_unknown_service_warns_and_keeps_waiting(live, settings, api, tmp_path):
    """`events tail -s nosuch` waited silently: a typo looked like a quiet service."""
    body = {"id": "known", "driver": "noop", "config": {}}
    assert (await api.post("/api/v1/services", json=body)).status_code == 201
    env = cli_env(tmp_path, WINDFLOW_TOKEN=mint_token(settings))
    proc = await asyncio.create_subprocess_exec(
        WINDFLOW_SCRIPT,
        "events",
        "tail",
        "-s",
        "known",
        "-s",
        "nosuch",
        "--api",
        live.http_url,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), timeout=30)).decode()
        assert "warning" in line and "'nosuch'" in line and "known" not in line, line
        await asyncio.sleep(1)
        assert proc.returncode is None  # still waiting for events
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
