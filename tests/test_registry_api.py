"""Service registry, versioned configs and the system file through the real API, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from windflow.persistence.models import ConfigVersionRow, OutboxRow, ServiceRow

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def svc(sid: str, *, deps: list[str] | None = None, port: int = 9000, **extra) -> dict:
    body = {
        "id": sid,
        "driver": "process",
        "config": {"command": ["python3", "-m", "http.server", str(port)]},
        "health": {"kind": "tcp", "port": port},
        "depends_on": deps or [],
    }
    body.update(extra)
    return body


def assert_envelope(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message", "timestamp", "details"} <= set(err)
    if code:
        assert err["code"] == code, err
    return err


async def test_create_get_list_and_filters(api):
    r = await api.post("/api/v1/services", json=svc("database", labels={"tier": "data"}, description="Primary DB"))
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == '"1"'
    assert r.json()["version"] == 1
    await api.post("/api/v1/services", json=svc("cache", labels={"tier": "data"}))
    await api.post("/api/v1/services", json=svc("api", deps=["database", "cache"], labels={"tier": "app"}))

    r = await api.get("/api/v1/services")
    assert [s["id"] for s in r.json()["items"]] == ["api", "cache", "database"]
    r = await api.get("/api/v1/services", params={"label": "tier=data"})
    assert [s["id"] for s in r.json()["items"]] == ["cache", "database"]
    r = await api.get("/api/v1/services", params={"q": "primary"})
    assert [s["id"] for s in r.json()["items"]] == ["database"]
    r = await api.get("/api/v1/services", params={"driver": "http"})
    assert r.json()["items"] == []

    # pagination with an opaque cursor walks everything exactly once
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/api/v1/services", params=params)).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["api", "cache", "database"]
    assert_envelope(await api.get("/api/v1/services", params={"cursor": "!!"}), 422)


async def test_validation_errors_use_the_envelope_with_paths(api):
    bad = svc("web")
    bad["config"] = {"comand": ["x"]}
    bad["health"] = {"kind": "tcp", "port": 99999}
    err = assert_envelope(await api.post("/api/v1/services", json=bad), 422, "validation_error")
    paths = {".".join(map(str, d["loc"])) for d in err["details"]}
    assert any("config" in p and "command" in p for p in paths), paths
    assert any("health" in p and "port" in p for p in paths), paths

    err = assert_envelope(await api.post("/api/v1/services", json=svc("web", deps=["nope"])), 422)
    assert "nope" in err["message"]
    assert_envelope(await api.get("/api/v1/services/missing"), 404, "not_found")
    assert_envelope(await api.patch("/api/v1/services"), 405, "method_not_allowed")
    assert_envelope(await api.get("/api/v1/nothing-here"), 404)


async def test_cycle_is_rejected_with_the_cycle_spelled_out(api):
    await api.post("/api/v1/services", json=svc("a"))
    await api.post("/api/v1/services", json=svc("b", deps=["a"]))
    await api.post("/api/v1/services", json=svc("c", deps=["b"]))
    content = {k: v for k, v in svc("a", deps=["c"]).items() if k != "id"}
    err = assert_envelope(
        await api.put("/api/v1/services/a/config", json={"content": content}, headers={"If-Match": '"1"'}), 422
    )
    assert "a -> c -> b -> a" in err["message"]


async def test_versions_diff_revert_and_conflicts(api, db):
    await api.post("/api/v1/services", json=svc("web", port=9001))
    current = (await api.get("/api/v1/services/web/config")).json()
    content = current["content"]
    content["config"]["env"] = {"MODE": "fast"}
    # no expected version: 428
    assert_envelope(await api.put("/api/v1/services/web/config", json={"content": content}), 428)
    r = await api.put(
        "/api/v1/services/web/config", json={"content": content, "comment": "faster"}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["author"] == "tester" and r.json()["comment"] == "faster"
    # stale version: 409 and nothing saved
    content["config"]["env"] = {"MODE": "slow"}
    assert_envelope(
        await api.put("/api/v1/services/web/config", json={"content": content, "expected_version": 1}),
        409,
        "version_conflict",
    )
    diff = (await api.get("/api/v1/services/web/config/diff", params={"from": 1, "to": 2})).json()
    assert {"op": "add", "path": "/config/env/MODE", "value": "fast"} in diff["patch"]
    r = await api.post("/api/v1/services/web/config/revert", json={"version": 1, "expected_version": 2})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3 and r.json()["reverted_from"] == 1
    v1 = (await api.get("/api/v1/services/web/config/versions/1")).json()
    assert r.json()["content"] == v1["content"] and r.json()["content_hash"] == v1["content_hash"]
    history = (await api.get("/api/v1/services/web/config/versions")).json()["items"]
    assert [v["version"] for v in history] == [3, 2, 1]
    # validate saves nothing
    bad = dict(content, health={"kind": "http", "url": "ftp://x"})
    report = (await api.post("/api/v1/services/web/config/validate", json=bad)).json()
    assert report["valid"] is False and report["problems"]
    async with db.read() as s:
        assert (await s.execute(select(func.count()).select_from(ConfigVersionRow))).scalar_one() == 3


async def test_twenty_concurrent_puts_one_wins_versions_gapless(api, db):
    await api.post("/api/v1/services", json=svc("hot", port=9002))
    base = (await api.get("/api/v1/services/hot/config")).json()["content"]

    async def put(i: int):
        content = {**base, "description": f"writer {i}"}
        return await api.put("/api/v1/services/hot/config", json={"content": content}, headers={"If-Match": '"1"'})

    results = await asyncio.gather(*(put(i) for i in range(20)))
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 1 and codes.count(409) == 19, codes
    for r in results:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "version_conflict"
    async with db.read() as s:
        numbers = sorted(
            (await s.execute(select(ConfigVersionRow.version).where(ConfigVersionRow.service_id == "hot"))).scalars()
        )
    assert numbers == [1, 2]


async def test_secrets_are_redacted_and_kept_on_round_trip(api, db):
    body = svc("vault", port=9003)
    body["config"]["env"] = {"DB_PASSWORD": "hunter2", "MODE": "x"}
    body["health"] = {"kind": "postgres", "dsn": "postgresql://app:s3cret@127.0.0.1:5432/app"}
    r = await api.post("/api/v1/services", json=body)
    assert r.status_code == 201, r.text
    text = (await api.get("/api/v1/services/vault")).text + (await api.get("/api/v1/services/vault/config")).text
    assert "hunter2" not in text and "s3cret" not in text
    assert "**redacted**" in text
    # GET, edit, PUT back: the redacted secret is kept, not overwritten with the placeholder
    content = (await api.get("/api/v1/services/vault/config")).json()["content"]
    content["config"]["env"]["MODE"] = "y"
    r = await api.put("/api/v1/services/vault/config", json={"content": content}, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    async with db.read() as s:
        row = (await s.execute(select(ServiceRow).where(ServiceRow.id == "vault"))).scalar_one()
    assert row.spec["config"]["env"] == {"DB_PASSWORD": "hunter2", "MODE": "y"}
    assert row.spec["health"]["dsn"] == "postgresql://app:s3cret@127.0.0.1:5432/app"
    export = (await api.get("/api/v1/system")).text
    assert "hunter2" not in export


async def test_delete_refused_while_depended_on_unless_forced(api):
    await api.post("/api/v1/services", json=svc("db", port=9004))
    await api.post("/api/v1/services", json=svc("app", deps=["db"], port=9005))
    err = assert_envelope(await api.delete("/api/v1/services/db"), 409)
    assert err["details"]["dependants"] == ["app"]
    assert (await api.delete("/api/v1/services/db", params={"force": True})).status_code == 204
    app = (await api.get("/api/v1/services/app")).json()
    assert app["depends_on"] == [] and app["version"] == 2


async def _table_counts(db) -> dict[str, int]:
    async with db.read() as s:
        return {
            "services": (await s.execute(select(func.count()).select_from(ServiceRow))).scalar_one(),
            "versions": (await s.execute(select(func.count()).select_from(ConfigVersionRow))).scalar_one(),
            # AUDIT events excluded: a refused request is audited (outcome=failure), which is not a change
            "outbox": (
                await s.execute(select(func.count()).select_from(OutboxRow).where(OutboxRow.event_type != "AUDIT"))
            ).scalar_one(),
        }


async def test_system_file_all_or_nothing_and_export_round_trip(api, db):
    text = (EXAMPLES / "windflow.yaml").read_text()
    doc = yaml.safe_load(text)
    # one bad service among good ones: 422 listing the problem, nothing saved
    bad = yaml.safe_load(text)
    first = next(iter(bad["services"]))
    bad["services"][first]["health"] = {"kind": "tcp", "port": "not-a-port"}
    bad["services"]["ghost"] = {"driver": "process", "config": {"command": ["x"]}, "depends_on": ["nowhere"]}
    before = await _table_counts(db)
    err = assert_envelope(
        await api.put("/api/v1/system", content=yaml.safe_dump(bad), headers={"content-type": "application/yaml"}), 422
    )
    paths = {".".join(map(str, d["loc"])) for d in err["details"]}
    assert f"services.{first}.health.port" in paths, paths
    assert await _table_counts(db) == before
    # a YAML syntax error is an error too, with its line
    err = assert_envelope(
        await api.put("/api/v1/system", content="services: [", headers={"content-type": "application/yaml"}), 422
    )
    assert "line" in err["message"]

    r = await api.put("/api/v1/system", content=text, headers={"content-type": "application/yaml"})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["created"]) == sorted(doc["services"])
    exported = (await api.get("/api/v1/system", params={"secrets": True})).text
    r = await api.put("/api/v1/system", content=exported, headers={"content-type": "application/yaml"})
    assert r.json()["unchanged"] == sorted(doc["services"]) and not r.json()["updated"]
    report = (
        await api.post("/api/v1/system/validate", content=text, headers={"content-type": "application/yaml"})
    ).json()
    assert report["valid"] and report["order"][0]


async def test_an_unchanged_file_applied_by_the_cli_and_by_rest_saves_no_version(api, db):
    """`windflow apply` / `windflow up` send the file with each process service's working directory resolved to the
    file's directory; a REST PUT of the same file has none. Alternating the two changes nothing after the first."""
    from windflow.domain.system import dump_system, load_system, parse_yaml, to_yaml

    file = EXAMPLES / "windflow.yaml"
    text = file.read_text()
    system = load_system(parse_yaml(text), base_dir=str(file.resolve().parent))
    as_cli = to_yaml(dump_system(system.services, notifications=system.notifications))
    first = await api.put("/api/v1/system", content=as_cli, headers={"content-type": "application/yaml"})
    assert first.status_code == 200 and first.json()["created"], first.text
    versions = await _versions(db)
    for body in (text, as_cli, text, as_cli):
        r = await api.put("/api/v1/system", content=body, headers={"content-type": "application/yaml"})
        assert r.status_code == 200, r.text
        assert not r.json()["updated"] and sorted(r.json()["unchanged"]) == sorted(first.json()["created"])
    assert await _versions(db) == versions
    # the recorded directory is the file's, still
    spec = (await api.get(f"/api/v1/services/{first.json()['created'][0]}")).json()
    assert spec["config"]["cwd"] == str(file.resolve().parent)


async def _versions(db) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(ConfigVersionRow))).scalar_one())


async def test_templates_list_and_instantiate(api):
    names = [t["name"] for t in (await api.get("/api/v1/config-templates")).json()]
    assert "http-process" in names
    r = await api.post(
        "/api/v1/config-templates/http-process/instantiate",
        json={"service_id": "webapp", "parameters": {"command": ["python3", "app.py"], "port": 8081}, "create": True},
    )
    assert r.status_code == 200, r.text
    assert r.json()["service"]["health"]["url"] == "http://127.0.0.1:8081/health"
    assert_envelope(
        await api.post(
            "/api/v1/config-templates/http-process/instantiate", json={"service_id": "w2", "parameters": {}}
        ),
        422,
    )


async def test_every_builtin_template_renders_to_a_valid_service(api):
    """Templates whose parameters all have defaults render with them alone; numbers in argv become text."""
    rendered = []
    for template in (await api.get("/api/v1/config-templates")).json():
        params = {p["name"]: p.get("default") for p in template["parameters"] if p.get("default") is not None}
        if any(p.get("required") and p["name"] not in params for p in template["parameters"]):
            continue
        r = await api.post(
            f"/api/v1/config-templates/{template['name']}/instantiate",
            json={"service_id": f"t-{template['name']}", "parameters": params},
        )
        assert r.status_code == 200, (template["name"], r.text)
        service = r.json()["service"]
        assert service["id"] == f"t-{template['name']}", service
        argv = service.get("config", {}).get("command")
        assert argv is None or all(isinstance(arg, str) for arg in argv), (template["name"], argv)
        rendered.append(template["name"])
    assert "redis" in rendered, rendered
    redis = (await api.post("/api/v1/config-templates/redis/instantiate", json={"service_id": "cache"})).json()
    assert redis["service"]["config"]["command"] == ["redis-server", "--port", "6379", "--save", ""]


async def test_request_id_health_and_body_limit(api, anon, settings):
    r = await anon.get("/healthz")
    assert r.status_code == 200 and r.headers["x-request-id"]
    r = await anon.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    big = "x" * (settings.max_body_bytes + 10)
    assert_envelope(await api.put("/api/v1/system", content=big, headers={"content-type": "application/yaml"}), 413)


async def test_readyz_reports_unreachable_temporal(anon, app):
    app.state.resources.settings.__dict__["temporal_address"] = "127.0.0.1:1"
    app.state.resources.temporal._settings = app.state.resources.settings
    err = assert_envelope(await anon.get("/readyz"), 503, "not_ready")
    assert err["details"]["database"] == "ok" and "unreachable" in err["details"]["temporal"]


async def test_config_change_writes_event_in_same_transaction(api, db, app):
    await api.post("/api/v1/services", json=svc("evt", port=9010))
    async with db.read() as s:
        types = list((await s.execute(select(OutboxRow.event_type))).scalars())
    assert "CONFIG_CHANGED" in types
    await app.state.resources.relay.run_once()
    history = app.state.resources.bus.history()
    assert any(e.event_type == "CONFIG_CHANGED" and e.data["service_id"] == "evt" for e in history)
