"""Jobs (``kind: job``) and ``depends_on`` conditions: real processes, a real worker, the real dev server."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowFailureError

from tests.helpers import processes_with, register, running_worker, standin
from windflow.domain.contracts import ComponentStatus, InitInput, InitOptions, InitState, InitStatus
from windflow.domain.errors import ConfigInvalid
from windflow.domain.models import ServiceSpec
from windflow.domain.system import load_system
from windflow.persistence.job_models import JobRunRow
from windflow.persistence.models import ServiceRow
from windflow.workflows.initialization import SystemInitialization


def job(name: str, code: str, *, deps=(), **extra) -> ServiceSpec:
    body = {
        "id": name,
        "kind": "job",
        "driver": "process",
        "config": {"command": [sys.executable, "-c", code], "stop_grace": "1s"},
        "depends_on": list(deps) if not isinstance(deps, dict) else deps,
        "restart": {"max_attempts": 1, "backoff": 0},
    }
    body.update(extra)
    return ServiceSpec.model_validate(body)


async def run_init(client, task_queue, **options) -> InitState:
    run_id = uuid.uuid4().hex[:12]
    handle = await client.start_workflow(
        SystemInitialization.run,
        InitInput(run_id=run_id, options=InitOptions(retry_window=0, **options)),
        id=f"init/{run_id}",
        task_queue=task_queue,
    )
    try:
        return await handle.result()
    except WorkflowFailureError:
        return await handle.query(SystemInitialization.status)


def migration(marker: Path, *, sleep: float = 0.3) -> str:
    return (
        f"import time, pathlib; p = pathlib.Path({str(marker)!r}); time.sleep({sleep}); "
        "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n)); print(f'applied migration {n}')"
    )


async def test_migration_job_gates_the_api(temporal_env, wsettings, sqlite_db, ports, task_queue, tmp_path):
    marker = tmp_path / "migrated"
    db_port, api_port = ports(), ports()
    await register(
        sqlite_db,
        standin("db", db_port, boot=0.2, protocol="tcp"),
        job("migrate", migration(marker), deps={"db": {"condition": "healthy"}}),
        standin(
            "api", api_port, deps={"db": {"condition": "healthy"}, "migrate": {"condition": "completed_successfully"}}
        ),
    )
    async with running_worker(temporal_env.client, wsettings, sqlite_db):
        result = await run_init(temporal_env.client, task_queue)
    assert result.status == InitStatus.SUCCEEDED, result.message
    comps = result.components
    mig = comps["migrate"]
    assert mig.kind == "job" and mig.status == ComponentStatus.COMPLETED
    assert mig.exit_code == 0 and mig.duration is not None and mig.duration >= 0.3
    assert mig.log_tail == ["applied migration 1"]
    assert comps["api"].conditions == {"db": "healthy", "migrate": "completed_successfully"}
    # the job ran after the db was healthy; the api started only once the job had completed
    assert mig.started_at >= comps["db"].healthy_at
    assert comps["api"].started_at >= mig.finished_at
    assert marker.read_text() == "1"
    async with sqlite_db.read() as s:
        states = dict((await s.execute(select(ServiceRow.id, ServiceRow.state))).all())
        mig_row = await s.get(ServiceRow, "migrate")
        detail = mig_row.state_detail
        runs = list((await s.execute(select(JobRunRow))).scalars())
    assert states == {"db": "healthy", "migrate": "completed", "api": "healthy"}
    assert detail["job"]["exit_code"] == 0 and detail["job"]["succeeded"] is True
    assert mig_row.pid is None and "pid" not in detail  # the job has exited: no pid of it stays
    assert [(r.service_id, r.succeeded, r.exit_code, r.version) for r in runs] == [("migrate", True, 0, 1)]
    for port in (db_port, api_port):
        assert len(processes_with(f"--port {port} ")) == 1


async def test_failed_job_names_its_stderr_and_skips_dependants(temporal_env, wsettings, sqlite_db, ports, task_queue):
    api_port = ports()
    code = (
        "import sys; print('connecting'); "
        "print(\"can't open file 'migrations/0042.sql'\", file=sys.stderr); sys.exit(2)"
    )
    await register(
        sqlite_db,
        job("migrate", code, restart={"max_attempts": 2, "backoff": 0}),
        standin("api", api_port, deps={"migrate": {"condition": "completed_successfully"}}),
    )
    async with running_worker(temporal_env.client, wsettings, sqlite_db):
        result = await run_init(temporal_env.client, task_queue)
    assert result.status == InitStatus.FAILED
    mig = result.components["migrate"]
    assert mig.status == ComponentStatus.FAILED and mig.exit_code == 2
    assert "exited with code 2" in mig.last_error
    assert "can't open file 'migrations/0042.sql'" in mig.last_error and "after 2 attempts" in mig.last_error
    assert result.components["api"].status == ComponentStatus.SKIPPED
    assert processes_with(f"--port {api_port} ") == []
    async with sqlite_db.read() as s:
        runs = list((await s.execute(select(JobRunRow).order_by(JobRunRow.id))).scalars())
        row = await s.get(ServiceRow, "migrate")
    assert [(r.attempt, r.succeeded, r.exit_code) for r in runs] == [(1, False, 2), (2, False, 2)]
    assert row.state == "failed" and row.pid is None and "pid" not in row.state_detail


async def test_success_exit_codes(temporal_env, wsettings, sqlite_db, task_queue):
    await register(sqlite_db, job("seed", "import sys; sys.exit(3)", success_exit_codes=[0, 3]))
    async with running_worker(temporal_env.client, wsettings, sqlite_db):
        result = await run_init(temporal_env.client, task_queue)
    assert result.status == InitStatus.SUCCEEDED
    assert result.components["seed"].status == ComponentStatus.COMPLETED and result.components["seed"].exit_code == 3


async def test_job_timeout_stops_it(temporal_env, wsettings, sqlite_db, task_queue):
    marker = f"hang-{uuid.uuid4().hex[:8]}"
    await register(sqlite_db, job("hang", f"import time; time.sleep(60)  # {marker}", timeout="0.5s"))
    async with running_worker(temporal_env.client, wsettings, sqlite_db):
        result = await run_init(temporal_env.client, task_queue)
    comp = result.components["hang"]
    assert result.status == InitStatus.FAILED and comp.status == ComponentStatus.FAILED
    assert "timed out after 0.5s" in comp.last_error
    assert processes_with(marker) == []


async def test_run_once_is_skipped_on_the_second_initialization(
    temporal_env, wsettings, sqlite_db, task_queue, tmp_path
):
    marker = tmp_path / "once"
    await register(sqlite_db, job("migrate", migration(marker, sleep=0), run="once"))
    async with running_worker(temporal_env.client, wsettings, sqlite_db):
        first = await run_init(temporal_env.client, task_queue)
        second = await run_init(temporal_env.client, task_queue)
    assert first.status == second.status == InitStatus.SUCCEEDED
    assert first.components["migrate"].exit_code == 0 and "skipped" not in (
        first.components["migrate"].last_error or ""
    )
    again = second.components["migrate"]
    assert again.status == ComponentStatus.COMPLETED and "skipped: version 1 already completed" in again.last_error
    assert marker.read_text() == "1"  # ran once


async def test_started_condition_does_not_wait_for_health(temporal_env, wsettings, sqlite_db, ports, task_queue):
    slow, quick = ports(), ports()
    await register(
        sqlite_db,
        standin("slow", slow, boot=1.5),
        standin("quick", quick, boot=0.1, deps={"slow": {"condition": "started"}}),
    )
    async with running_worker(temporal_env.client, wsettings, sqlite_db):
        result = await run_init(temporal_env.client, task_queue)
    assert result.status == InitStatus.SUCCEEDED
    comps = result.components
    assert comps["quick"].started_at < comps["slow"].healthy_at  # it did not wait for slow's health
    assert comps["quick"].conditions == {"slow": "started"}


async def test_validate_only_shows_the_conditions(temporal_env, wsettings, sqlite_db, ports, task_queue):
    await register(
        sqlite_db,
        standin("db", ports()),
        job("migrate", "pass", deps=["db"]),
        standin("api", ports(), deps={"db": {}, "migrate": {"condition": "completed_successfully"}}),
    )
    async with running_worker(temporal_env.client, wsettings, sqlite_db):
        result = await run_init(temporal_env.client, task_queue, validate_only=True)
    assert result.status == InitStatus.SUCCEEDED
    assert "would start in this order: db | migrate | api" in result.message
    assert "api ← db: healthy, migrate: completed_successfully" in result.message
    assert "migrate ← db: healthy" in result.message


# --------------------------------------------------------------------------- validation (pure)


def _system(services: dict) -> dict:
    return {"version": 1, "services": services}


JOB = {"kind": "job", "driver": "process", "config": {"command": ["true"]}}
SVC = {"driver": "noop"}


def _problems(doc: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigInvalid) as info:
        load_system(doc)
    return [(".".join(map(str, p["loc"])), p["msg"]) for p in info.value.details]


def test_completed_successfully_on_a_service_is_refused():
    problems = _problems(
        _system({"db": SVC, "api": {**SVC, "depends_on": {"db": {"condition": "completed_successfully"}}}})
    )
    assert problems[0][0] == "services.api.depends_on.db.condition" and "never completes" in problems[0][1]


def test_healthy_on_a_job_without_a_probe_is_refused_with_a_probe_allowed():
    problems = _problems(_system({"migrate": JOB, "api": {**SVC, "depends_on": ["migrate"]}}))
    assert problems[0][0] == "services.api.depends_on.migrate.condition" and "never healthy" in problems[0][1]
    probed = {**JOB, "health": {"kind": "tcp", "port": 5000}}
    load_system(_system({"migrate": probed, "api": {**SVC, "depends_on": ["migrate"]}}))


def test_cycle_through_a_job_is_refused():
    problems = _problems(
        _system(
            {
                "migrate": {**JOB, "depends_on": ["api"]},
                "api": {**SVC, "depends_on": {"migrate": {"condition": "completed_successfully"}}},
            }
        )
    )
    assert "dependency cycle" in problems[0][1]


def test_job_fields_only_on_jobs_and_jobs_only_on_process_or_noop():
    problems = _problems(_system({"api": {**SVC, "run": "once", "timeout": "5s"}}))
    assert "run, timeout: only for `kind: job`" in problems[0][1] or "timeout, run" in problems[0][1]
    problems = _problems(
        _system(
            {
                "j": {
                    "kind": "job",
                    "driver": "http",
                    "config": {"start": {"url": "http://x/"}, "stop": {"url": "http://x/"}},
                }
            }
        )
    )
    assert "process driver" in problems[0][1]
    problems = _problems(_system({"a": {**SVC, "depends_on": {"b": {"condition": "ready"}}}, "b": SVC}))
    assert problems[0][0].startswith("services.a.depends_on.b.condition")


def test_depends_on_round_trips_short_and_long():
    short = ServiceSpec.model_validate({"id": "a", **SVC, "depends_on": ["b", "c"]})
    assert short.content()["depends_on"] == ["b", "c"] and short.conditions() == {"b": "healthy", "c": "healthy"}
    long = ServiceSpec.model_validate({"id": "a", **SVC, "depends_on": {"b": {"condition": "started"}, "c": None}})
    assert long.content()["depends_on"] == {"b": {"condition": "started"}, "c": {"condition": "healthy"}}
    assert ServiceSpec.model_validate({"id": "a", **long.content()}) == long
    # a service's content has no job fields: it hashes as before jobs existed
    assert "kind" not in short.content() and "run" not in short.content()
    j = ServiceSpec.model_validate({"id": "m", **JOB, "run": "once"})
    assert ServiceSpec.model_validate({"id": "m", **j.content()}) == j and j.content()["kind"] == "job"


# --------------------------------------------------------------------------- API


async def test_api_shows_jobs_and_conditions_and_refuses_bad_combinations(api, db):
    from tests.test_registry_api import _table_counts, assert_envelope

    system = {
        "version": 1,
        "services": {
            "db": {"driver": "noop"},
            "migrate": {**JOB, "depends_on": ["db"], "run": "once", "timeout": "2m", "success_exit_codes": [0, 3]},
            "api": {"driver": "noop", "depends_on": {"db": None, "migrate": {"condition": "completed_successfully"}}},
        },
    }
    bad = {
        "version": 1,
        "services": {
            **system["services"],
            "api": {
                "driver": "noop",
                "depends_on": {"db": {"condition": "completed_successfully"}, "migrate": {"condition": "healthy"}},
            },
        },
    }
    before = await _table_counts(db)
    err = assert_envelope(await api.put("/api/v1/system", json=bad), 422)
    paths = {".".join(map(str, d["loc"])): d["msg"] for d in err["details"]}
    assert "never completes" in paths["services.api.depends_on.db.condition"]
    assert "never healthy" in paths["services.api.depends_on.migrate.condition"]
    assert await _table_counts(db) == before
    report = (await api.post("/api/v1/system/validate", json=system)).json()
    assert report["valid"] and report["order"] == [["db"], ["migrate"], ["api"]]
    assert report["conditions"] == {
        "migrate": {"db": "healthy"},
        "api": {"db": "healthy", "migrate": "completed_successfully"},
    }
    report = (await api.post("/api/v1/system/validate", json=bad)).json()
    assert not report["valid"] and {p["type"] for p in report["problems"]} == {"condition"}
    r = await api.put("/api/v1/system", json=system)
    assert r.status_code == 200, r.text
    api_svc = (await api.get("/api/v1/services/api")).json()
    assert api_svc["conditions"] == {"db": "healthy", "migrate": "completed_successfully"}
    assert api_svc["kind"] == "service" and api_svc["job"] is None
    mig = (await api.get("/api/v1/services/migrate")).json()
    assert mig["kind"] == "job" and mig["job"] == {"success_exit_codes": [0, 3], "timeout": "2m", "run": "once"}
    # turning migrate into a service would break api's condition: refused, by the single-service route too
    content = (await api.get("/api/v1/services/migrate/config")).json()["content"]
    for key in ("kind", "run", "timeout", "success_exit_codes"):
        content.pop(key)
    err = assert_envelope(
        await api.put("/api/v1/services/migrate/config", json={"content": content}, headers={"If-Match": '"1"'}), 422
    )
    assert "never completes" in err["message"]
    # the export re-applies unchanged (conditions and job fields round-trip)
    exported = (await api.get("/api/v1/system")).text
    assert "completed_successfully" in exported and "run: once" in exported
    r = await api.put("/api/v1/system", content=exported, headers={"content-type": "application/yaml"})
    assert sorted(r.json()["unchanged"]) == ["api", "db", "migrate"]
    # a job's runs
    async with db.write() as s:
        s.add(
            JobRunRow(
                service_id="migrate",
                version=1,
                run_id="r1",
                attempt=1,
                succeeded=False,
                exit_code=2,
                duration=0.5,
                message="migrate exited with code 2: boom",
                log_tail=["boom"],
            )
        )
    runs = (await api.get("/api/v1/services/migrate/job-runs")).json()
    assert [(x["exit_code"], x["succeeded"], x["log_tail"]) for x in runs] == [(2, False, ["boom"])]
    assert_envelope(await api.get("/api/v1/services/nope/job-runs"), 404)


# --------------------------------------------------------------------------- CLI


def test_cli_shows_a_job_with_exit_code_duration_and_conditions():
    import io

    from rich.console import Console

    from windflow.cli.init import render
    from windflow.cli.ops import depends_text

    components = {
        "migrate": {
            "name": "migrate",
            "kind": "job",
            "layer": 0,
            "status": "FAILED",
            "attempts": 2,
            "exit_code": 2,
            "duration": 0.42,
            "last_error": "migrate exited with code 2: can't open file",
            "log_tail": ["can't open file"],
        },
        "api": {
            "name": "api",
            "layer": 1,
            "status": "PENDING",
            "attempts": 0,
            "depends_on": ["migrate"],
            "conditions": {"migrate": "completed_successfully"},
        },
    }
    run = {
        "run_id": "r1",
        "status": "FAILED",
        "progress": 50,
        "links": {},
        "state": {"message": "failed", "components": components},
    }
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(render(run))
    text = out.getvalue()
    row = next(line for line in text.splitlines() if "migrate (job)" in line)
    assert "0.4s" in row and "exit 2; migrate exited with code 2: can't open file" in row
    assert "waits for migrate (completed_successfully)" in text
    assert (
        depends_text(
            {"depends_on": ["db", "migrate"], "conditions": {"db": "healthy", "migrate": "completed_successfully"}}
        )
        == "db, migrate (completed_successfully)"
    )


async def test_each_attempt_shows_its_own_output(temporal_env, wsettings, sqlite_db, task_queue, tmp_path):
    """The output of an attempt is its own: an earlier attempt's lines in the same log do not leak into it."""
    marker = tmp_path / "attempts"
    code = (
        f"import pathlib, sys; p = pathlib.Path({str(marker)!r}); n = int(p.read_text()) + 1 if p.exists() else 1; "
        "p.write_text(str(n)); print(f'error in attempt {n}', file=sys.stderr); sys.exit(0 if n == 2 else 4)"
    )
    await register(sqlite_db, job("flaky", code, restart={"max_attempts": 2, "backoff": 0}))
    async with running_worker(temporal_env.client, wsettings, sqlite_db):
        result = await run_init(temporal_env.client, task_queue)
    comp = result.components["flaky"]
    assert result.status == InitStatus.SUCCEEDED and comp.attempts == 2 and comp.exit_code == 0
    assert comp.log_tail == ["error in attempt 2"]
    async with sqlite_db.read() as s:
        runs = list((await s.execute(select(JobRunRow).order_by(JobRunRow.id))).scalars())
    assert [(r.attempt, r.exit_code, r.log_tail) for r in runs] == [
        (1, 4, ["error in attempt 1"]),
        (2, 0, ["error in attempt 2"]),
    ]
    assert runs[0].message == "flaky exited with code 4 (success: 0): error in attempt 1"


async def test_job_history_replays(temporal_env, wsettings, sqlite_db, ports, task_queue, tmp_path):
    """A run with a retried job, a probe-less service started on `started`, and a `completed_successfully` edge
    replays without nondeterminism (recorded under tests/histories with WINDFLOW_RECORD_HISTORIES=1)."""
    import os

    from temporalio.worker import Replayer

    from tests.test_initialization import HISTORIES

    marker = tmp_path / "attempts"
    code = (
        f"import pathlib, sys; p = pathlib.Path({str(marker)!r}); n = int(p.read_text()) + 1 if p.exists() else 1; "
        "p.write_text(str(n)); sys.exit(0 if n == 2 else 1)"
    )
    p1, p2 = ports(), ports()
    await register(
        sqlite_db,
        standin("db", p1, boot=0.3),
        job("migrate", code, deps=["db"], restart={"max_attempts": 2, "backoff": "100ms"}),
        standin(
            "api",
            p2,
            deps={"db": {"condition": "started"}, "migrate": {"condition": "completed_successfully"}},
            monitored=False,
        ),
    )
    client = temporal_env.client
    run_id = uuid.uuid4().hex[:12]
    async with running_worker(client, wsettings, sqlite_db):
        handle = await client.start_workflow(
            SystemInitialization.run,
            InitInput(run_id=run_id, options=InitOptions(retry_window=0)),
            id=f"init/{run_id}",
            task_queue=task_queue,
        )
        result = await handle.result()
    assert result.status == InitStatus.SUCCEEDED and result.components["migrate"].attempts == 2
    history = await handle.fetch_history()
    replay = await Replayer(workflows=[SystemInitialization], data_converter=client.data_converter).replay_workflow(
        history
    )
    assert replay.replay_failure is None
    if os.environ.get("WINDFLOW_RECORD_HISTORIES"):
        (HISTORIES / "initialization_jobs.json").write_text(history.to_json())


async def test_a_job_is_never_supervised_by_a_sweep(wsettings, sqlite_db):
    """Even when it looks like a running service (its probe passed while it ran; desired running)."""
    from sqlalchemy import update

    from windflow.activities.supervision import SupervisionActivities
    from windflow.drivers import build_driver_registry
    from windflow.probes import build_probe_registry

    await register(
        sqlite_db,
        job("migrate", "pass", health={"kind": "tcp", "port": 5000}),
        ServiceSpec.model_validate({"id": "api", **SVC}),
    )
    async with sqlite_db.write() as s:
        await s.execute(update(ServiceRow).values(state="healthy", desired="running"))
    acts = SupervisionActivities(
        db=sqlite_db, drivers=build_driver_registry(data_dir=wsettings.ensure_data_dir()), probes=build_probe_registry()
    )
    assert (await acts.sweep_plan()).supervise == ["api"]
    assert [s.id for s in await acts.list_monitored()] == ["api"]


async def test_healthy_on_a_job_with_a_probe_starts_dependants_while_it_runs(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    """A job with a readiness probe (a one-shot server, a warm-up that serves while it runs): `healthy` is met
    once the probe passes, before the job completes."""
    jport, api_port = ports(), ports()
    code = (
        "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {jport})); s.listen(); time.sleep(2.5); print('warm-up done')"
    )
    await register(
        sqlite_db,
        job("warmup", code, readiness={"kind": "tcp", "port": jport, "interval": "0.1s"}),
        standin("api", api_port, boot=0.1, deps=["warmup"], monitored=False),
    )
    async with running_worker(temporal_env.client, wsettings, sqlite_db):
        result = await run_init(temporal_env.client, task_queue)
    assert result.status == InitStatus.SUCCEEDED, result.message
    warm, api = result.components["warmup"], result.components["api"]
    assert warm.status == ComponentStatus.COMPLETED and warm.exit_code == 0 and warm.log_tail == ["warm-up done"]
    assert warm.healthy_at is not None and api.started_at < warm.finished_at  # it did not wait for the end


# --------------------------------------------------------------------------- failure causes


async def test_an_exit_message_carries_up_to_five_stderr_lines_of_that_run(wsettings, tmp_path):
    from windflow.drivers import build_driver_registry

    code = (
        "import sys\nfor i in range(1, 8): print(f'line {i}', file=sys.stderr)\n"
        "print('x' * 5000, file=sys.stderr); print('fatal: config missing', file=sys.stderr); sys.exit(3)"
    )
    spec = ServiceSpec.model_validate(
        {"id": "crashy", "driver": "process", "config": {"command": [sys.executable, "-c", code]}}
    )
    driver = build_driver_registry(data_dir=wsettings.ensure_data_dir()).for_service(spec)
    await driver.start(spec)
    first = await driver.wait_exit(spec)
    # the last five lines, each cut to 300 characters
    assert first.message == "exited with code 3: line 5 | line 6 | line 7 | " + "x" * 300 + " | fatal: config missing"
    spec2 = spec.model_copy(
        update={
            "config": spec.config.model_copy(
                update={
                    "command": [
                        sys.executable,
                        "-c",
                        "import sys\nfor i in range(1, 8): print(f'again {i}', file=sys.stderr)\nsys.exit(4)",
                    ]
                }
            )
        }
    )
    await driver.start(spec2)
    second = await driver.wait_exit(spec2)
    assert second.message == "exited with code 4: again 3 | again 4 | again 5 | again 6 | again 7"  # this run's only
