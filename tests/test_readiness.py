"""Readiness kept apart from liveness, with real processes on a real worker and dev server.

The warming-cache scenario of docs/lifecycle.md, with short durations: the cache is alive at once (/health), ready
only after warming (/ready answers 503 for a while). Its dependant waits; nothing restarts the cache.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import select
from temporalio.client import WorkflowFailureError

from tests.helpers import (
    eventually,
    processes_with,
    register,
    running_worker,
    standin,
    supervise,
    terminate_quietly,
    watching,
)
from windflow.domain.contracts import ComponentStatus, InitInput, InitOptions, InitState, InitStatus
from windflow.domain.errors import ConfigInvalid
from windflow.domain.models import ServiceSpec
from windflow.domain.privilege import exec_changes
from windflow.domain.system import load_system
from windflow.persistence.models import OutboxRow, ServiceRow
from windflow.workflows.initialization import SystemInitialization

WARM = 2.0


def warming_cache(port: int, *, warm: float = WARM) -> ServiceSpec:
    """A cache that is alive at once and ready after ``warm`` seconds."""
    probe = {"interval": "0.2s", "timeout": "1s", "failure_threshold": 2}
    return standin(
        "cache",
        port,
        boot=0.1,
        args=["--warm", str(warm)],
        health=None,
        liveness={"kind": "http", "url": f"http://127.0.0.1:{port}/health", **probe},
        readiness={"kind": "http", "url": f"http://127.0.0.1:{port}/ready", **probe},
    )


def spawns(wsettings, service_id: str) -> int:
    log = Path(wsettings.data_dir) / "logs" / f"{service_id}.out.log"
    return log.read_text().count("booting") if log.exists() else 0


async def run_init(client, task_queue) -> InitState:
    run_id = uuid.uuid4().hex[:12]
    handle = await client.start_workflow(
        SystemInitialization.run,
        InitInput(run_id=run_id, options=InitOptions(retry_window=0)),
        id=f"init/{run_id}",
        task_queue=task_queue,
    )
    try:
        return await handle.result()
    except WorkflowFailureError:
        return await handle.query(SystemInitialization.status)


async def state_of(db, service_id: str) -> str:
    async with db.read() as s:
        return (await s.get(ServiceRow, service_id)).state


async def test_dependants_wait_for_a_warming_cache_that_is_never_restarted(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    client = temporal_env.client
    cache_port, api_port = ports(), ports()
    await register(sqlite_db, warming_cache(cache_port), standin("api", api_port, deps=["cache"], monitored=False))
    async with running_worker(client, wsettings, sqlite_db):
        result = await run_init(client, task_queue)
        assert result.status == InitStatus.SUCCEEDED, result.message
        cache, api = result.components["cache"], result.components["api"]
        # the cache was alive at once but ready only after warming: the api waited for that
        assert cache.status == ComponentStatus.HEALTHY
        assert (cache.healthy_at - cache.started_at).total_seconds() >= WARM - 0.3
        assert api.started_at >= cache.healthy_at
        # nothing restarted it: one boot, the same process throughout
        assert spawns(wsettings, "cache") == 1 and len(processes_with(f"--port {cache_port} ")) == 1
        await terminate_quietly(client, "recover/cache")


async def test_a_supervised_service_that_stops_being_ready_is_not_ready_not_restarted(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    client = temporal_env.client
    port = ports()
    await register(sqlite_db, warming_cache(port, warm=0))
    async with running_worker(client, wsettings, sqlite_db):
        result = await run_init(client, task_queue)
        assert result.status == InitStatus.SUCCEEDED, result.message
        pid = result.components["cache"].pid
        handle = await supervise(client, task_queue, "cache", sqlite_db)
        try:
            await eventually(lambda: watching(handle), timeout=15)
            await eventually(lambda: _state_is(sqlite_db, "cache", "healthy"), timeout=10)
            # the cache rebuilds: /ready fails for 2 s, /health passes throughout
            async with httpx2.AsyncClient(timeout=2) as http:
                assert (await http.post(f"http://127.0.0.1:{port}/unready?seconds=2")).status_code == 200
            await eventually(lambda: _state_is(sqlite_db, "cache", "not_ready"), timeout=5)
            await eventually(lambda: _state_is(sqlite_db, "cache", "healthy"), timeout=10)
            st = await handle.status()
            assert st.restarts_total == 0 and not await handle.recovering()
            assert processes_with(f"--port {port} ") == [pid] and spawns(wsettings, "cache") == 1
            async with sqlite_db.read() as s:
                rows = list(
                    (
                        await s.execute(
                            select(OutboxRow)
                            .where(OutboxRow.event_type == "SERVICE_STATUS_UPDATE")
                            .order_by(OutboxRow.id)
                        )
                    ).scalars()
                )
            states = [r.payload["data"]["state"] for r in rows if r.payload["data"]["service_id"] == "cache"]
            assert "not_ready" in states and "recovering" not in states
            not_ready = next(r.payload["data"] for r in rows if r.payload["data"]["state"] == "not_ready")
            assert not_ready["message"].startswith("not ready:")
        finally:
            await handle.terminate()


async def _state_is(db, service_id: str, state: str) -> bool:
    return await state_of(db, service_id) == state


# --------------------------------------------------------------------------- pure


def test_health_means_both_and_readiness_or_liveness_override_it():
    tcp = {"kind": "tcp", "port": 5000}
    ready = {"kind": "http", "url": "http://127.0.0.1:5000/ready"}
    both = ServiceSpec.model_validate({"id": "a", "driver": "noop", "health": tcp})
    assert both.readiness_spec() == both.liveness_spec() == both.health and not both.separate_readiness
    split = ServiceSpec.model_validate({"id": "a", "driver": "noop", "health": tcp, "readiness": ready})
    assert split.readiness_spec().kind == "http" and split.liveness_spec().kind == "tcp" and split.separate_readiness
    only = ServiceSpec.model_validate({"id": "a", "driver": "noop", "readiness": ready})
    assert only.liveness_spec() is None and only.separate_readiness
    # a service without the new probes keeps its content (and its version hash) as before
    assert "readiness" not in both.content() and "liveness" not in both.content()
    assert ServiceSpec.model_validate({"id": "a", **split.content()}) == split


def test_readiness_problems_are_named_and_exec_probes_need_exec_permission():
    with pytest.raises(ConfigInvalid) as info:
        load_system({"version": 1, "services": {"a": {"driver": "noop", "readiness": {"kind": "tcp", "port": 0}}}})
    assert [".".join(map(str, p["loc"])) for p in info.value.details] == ["services.a.readiness.port"]
    # a job with a readiness probe may be depended on with `healthy`
    load_system(
        {
            "version": 1,
            "services": {
                "warm": {
                    "kind": "job",
                    "driver": "process",
                    "config": {"command": ["true"]},
                    "readiness": {"kind": "tcp", "port": 5000},
                },
                "api": {"driver": "noop", "depends_on": ["warm"]},
            },
        }
    )
    plain = ServiceSpec.model_validate({"id": "a", "driver": "noop"})
    probed = ServiceSpec.model_validate({"id": "a", "driver": "noop", "liveness": {"kind": "exec", "command": ["x"]}})
    assert exec_changes(plain, probed) == ["liveness"]


async def test_api_round_trips_readiness_and_liveness(api):
    body = {
        "id": "cache",
        "driver": "noop",
        "readiness": {"kind": "postgres", "dsn": "postgresql://app:s3cret@127.0.0.1:5432/app"},
        "liveness": {"kind": "tcp", "port": 6379, "failure_threshold": 5},
    }
    r = await api.post("/api/v1/services", json=body)
    assert r.status_code == 201, r.text
    got = (await api.get("/api/v1/services/cache")).json()
    assert got["liveness"]["port"] == 6379 and got["liveness"]["failure_threshold"] == 5
    assert got["readiness"]["kind"] == "postgres" and "s3cret" not in got["readiness"]["dsn"]  # redacted
    exported = (await api.get("/api/v1/system")).text
    assert "readiness:" in exported and "liveness:" in exported and "s3cret" not in exported
    bad = {**body, "id": "other", "liveness": {"kind": "tcp", "port": 0}}
    r = await api.post("/api/v1/services", json=bad)
    assert r.status_code == 422 and "liveness" in r.json()["error"]["details"][0]["loc"], r.text


async def test_a_recovery_is_blocked_by_a_dependency_that_is_alive_but_not_ready(wsettings, sqlite_db, ports):
    """Blocked vs. dead: a dependant's recovery checks its dependencies' readiness, not only that they live."""
    from tests.helpers import start_service
    from windflow.activities.supervision import SupervisionActivities
    from windflow.domain.contracts import DependencyCheckInput
    from windflow.drivers import build_driver_registry
    from windflow.probes import build_probe_registry

    port = ports()
    cache = warming_cache(port, warm=60)
    await register(sqlite_db, cache, standin("api", ports(), deps=["cache"]))
    await start_service(wsettings, cache)
    acts = SupervisionActivities(
        db=sqlite_db, drivers=build_driver_registry(data_dir=wsettings.ensure_data_dir()), probes=build_probe_registry()
    )
    assert (await eventually(lambda: _alive(acts, cache), timeout=10)).healthy  # alive at once ...
    check = await acts.check_dependencies(DependencyCheckInput(service_id="api", depends_on=["cache"]))
    assert check.unhealthy == ["cache"] and "503" in check.messages["cache"]  # ... but not ready: blocked


async def _alive(acts, spec):
    result = await acts._probe(spec, "liveness")
    return result if result.healthy else None
