"""Service logs: the cause of a crash in its message, tail and follow through the API and the CLI, from this
host's files or from Redis Streams shipped by a worker."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import httpx2
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from tests.conftest import mint_token
from tests.live_server import LiveServer
from tests.test_cli import invoke
from tests.test_drivers_process import Cleanup, service
from windflow.drivers.process import ProcessDriver
from windflow.service_logs import FileLogSource, LogShipper, RedisLogSource, last_error_lines, tail_file
from windflow.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


# ---------------------------------------------------------------------------------------------- the driver


async def test_a_crash_message_carries_the_last_stderr_line(tmp_path: Path) -> None:
    """'exited with code 2' alone hid the reason, which sat in logs/*.err.log."""
    cleanup = Cleanup(tmp_path)
    driver = ProcessDriver(data_dir=tmp_path)
    try:
        missing = tmp_path / "no-such-app.py"
        spec = service("broken", [sys.executable, str(missing)])
        await driver.start(spec)
        info = await asyncio.wait_for(driver.wait_exit(spec), timeout=10)
        assert info is not None and info.exit_code == 2
        assert info.message.startswith("exited with code 2: ")
        assert "can't open file" in info.message and str(missing) in info.message

        # the next run of the same service fails silently: the earlier run's words are not blamed on it
        quiet = service("broken", [sys.executable, "-c", "import sys; sys.exit(3)"])
        await driver.start(quiet)
        info = await asyncio.wait_for(driver.wait_exit(quiet), timeout=10)
        assert info is not None and info.message == "exited with code 3"
    finally:
        cleanup.run()
        driver.close()


async def test_tail_file_and_last_error_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    assert tail_file(path, 5) == [] and last_error_lines(path) is None
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(100_000)) + b"partial")
    assert tail_file(path, 3, block=4096) == ["line 99998", "line 99999", "partial"]
    assert tail_file(path, 0) == []
    path.write_bytes(b"a" * 20_000 + b"\nb\n\n  \n")
    assert last_error_lines(path, lines=1) == "b"
    assert tail_file(path, 10)[0].endswith("…[cut]")  # an overlong line is clipped
    size = path.stat().st_size
    assert last_error_lines(path, since=size) is None  # nothing written since
    with path.open("ab") as f:
        f.write(b"fatal: config missing\n")
    assert last_error_lines(path, since=size) == "fatal: config missing"


# ---------------------------------------------------------------------------------------------- the API


async def _create(api: httpx2.AsyncClient, sid: str) -> None:
    resp = await api.post(
        "/api/v1/services", json={"id": sid, "driver": "process", "config": {"command": ["sleep", "1000"]}}
    )
    assert resp.status_code == 201, resp.text


def _write_logs(settings: Settings, sid: str, out: list[str], err: list[str]) -> Path:
    logs = settings.resolved_data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{sid}.out.log").write_text("".join(f"{x}\n" for x in out))
    (logs / f"{sid}.err.log").write_text("".join(f"{x}\n" for x in err))
    return logs


async def test_tail_from_files_with_permission_and_bad_input(api, anon, settings, db) -> None:
    await _create(api, "web")
    _write_logs(settings, "web", [f"out {i}" for i in range(10)], ["warn: slow", "error: boom"])
    resp = await api.get("/api/v1/services/web/logs", params={"lines": 2})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["source"] == "file" and body["service"] == "web"
    assert [(x["stream"], x["line"]) for x in body["lines"]] == [
        ("stdout", "out 8"),
        ("stdout", "out 9"),
        ("stderr", "warn: slow"),
        ("stderr", "error: boom"),
    ]
    only_err = (await api.get("/api/v1/services/web/logs?stream=stderr&lines=1")).json()["lines"]
    assert only_err == [{"stream": "stderr", "line": "error: boom", "at": None}]

    viewer = {"Authorization": f"Bearer {mint_token(settings, {'services:read', 'configs:read'}, roles=('viewer',))}"}
    denied = await anon.get("/api/v1/services/web/logs", headers=viewer)
    assert denied.status_code == 403 and "logs:read" in denied.json()["error"]["message"]
    assert (await anon.get("/api/v1/services/web/logs")).status_code == 401
    for query in ("lines=5001", "lines=-1", "stream=both", "follow=maybe"):
        bad = await api.get(f"/api/v1/services/web/logs?{query}")
        assert bad.status_code == 422, (query, bad.text)
        assert set(bad.json()["error"]) >= {"code", "message", "timestamp", "details"}
    missing = await api.get("/api/v1/services/nope/logs")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    await _create(api, "quiet")  # a service that never ran here, and no Redis: a clear 404
    none = await api.get("/api/v1/services/quiet/logs")
    assert none.status_code == 404 and "WINDFLOW_REDIS_URL" in none.json()["error"]["message"]


@pytest_asyncio.fixture(loop_scope="session")
async def live(settings, app_resources):
    from windflow.api.app import create_app

    async with LiveServer(create_app(settings, resources=app_resources)) as server:
        yield server


async def test_follow_streams_new_lines_over_http_and_survives_rotation(live, api, settings, db) -> None:
    await _create(api, "chatty")
    logs = _write_logs(settings, "chatty", ["old 1", "old 2"], [])
    headers = {"Authorization": f"Bearer {mint_token(settings)}"}
    got: list[dict] = []
    async with (
        httpx2.AsyncClient(base_url=live.http_url, headers=headers, timeout=10) as http,
        http.stream("GET", "/api/v1/services/chatty/logs", params={"lines": 1, "follow": "true"}) as resp,
    ):
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/x-ndjson")
        lines = resp.aiter_lines()

        async def next_line() -> dict:
            while True:
                raw = await asyncio.wait_for(anext(lines), 10)
                if raw.strip():
                    return json.loads(raw)

        got.append(await next_line())
        with (logs / "chatty.out.log").open("a") as f:
            f.write("new 1\nnew 2\n")
        with (logs / "chatty.err.log").open("a") as f:
            f.write("oops\n")
        for _ in range(3):
            got.append(await next_line())
        (logs / "chatty.out.log").write_text("")  # copy-truncate rotation
        with (logs / "chatty.out.log").open("a") as f:
            f.write("after rotation\n")
        got.append(await next_line())
    texts = [g["line"] for g in got]
    assert texts[0] == "old 2"
    assert sorted(texts[1:4]) == ["new 1", "new 2", "oops"]
    assert texts.index("new 1") < texts.index("new 2")
    assert texts[4] == "after rotation"


async def test_cli_prints_the_tail_with_stderr_marked(live, api, settings, db, tmp_path) -> None:
    await _create(api, "cli-svc")
    _write_logs(settings, "cli-svc", ["hello"], ["bad thing"])
    token = mint_token(settings)
    result = await invoke(tmp_path, "logs", "cli-svc", "-n", "5", "--api", live.http_url, WINDFLOW_TOKEN=token)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["out| hello", "err| bad thing"]
    result = await invoke(
        tmp_path, "logs", "cli-svc", "--stream", "stderr", "--json", "--api", live.http_url, WINDFLOW_TOKEN=token
    )
    assert json.loads(result.output.strip()) == {"stream": "stderr", "line": "bad thing", "at": None}
    missing = await invoke(tmp_path, "logs", "ghost", "--api", live.http_url, WINDFLOW_TOKEN=token)
    assert missing.exit_code == 2 and "not found" in missing.output


# ---------------------------------------------------------------------------------------------- Redis


async def test_shipper_to_redis_resumes_without_repeats_and_the_api_serves_it(
    redis_url, tmp_path, settings, db
) -> None:
    prefix = f"wf:test:logs:{uuid.uuid4().hex[:8]}:"
    redis = Redis.from_url(redis_url, decode_responses=True)
    logs = tmp_path / "worker-host" / "logs"
    logs.mkdir(parents=True)
    out = logs / "api.out.log"
    out.write_text("one\ntwo\n")
    (logs / "api.err.log").write_text("warning\n")
    try:
        shipper = LogShipper(redis, logs, prefix=prefix, maxlen=1000)
        assert await shipper.ship_once() == 3
        with out.open("a") as f:
            f.write("three\nhalf")  # a line still being written is not shipped yet
        assert await shipper.ship_once() == 1
        # a restarted worker resumes from the saved offsets: nothing again, then the rest of the line
        again = LogShipper(redis, logs, prefix=prefix, maxlen=1000)
        assert await again.ship_once() == 0
        with out.open("a") as f:
            f.write(" done\n")
        assert await again.ship_once() == 1
        source = RedisLogSource(redis, prefix=prefix)
        tail = await source.tail("api", 10)
        assert [t.line for t in tail if t.stream == "stdout"] == ["one", "two", "three", "half done"]
        assert [t.line for t in tail if t.stream == "stderr"] == ["warning"]
        assert all(t.at is not None for t in tail)
        assert [t.line for t in await source.tail("api", 2, ("stdout",))] == ["three", "half done"]

        # the API on another host (no local files) serves the shipped lines
        from windflow.api.app import build_resources, create_app

        remote = Settings(
            data_dir=tmp_path / "api-host",
            database_url=settings.database_url,
            jwt_secret="x" * 48,
            redis_url=redis_url,
            logs_prefix=prefix,
            events_stream=f"{prefix}events",
            _env_file=None,
        )
        res = await build_resources(remote, migrate=False)
        await res.db.dispose()
        res.db = db
        app = create_app(remote, resources=res)
        try:
            async with (
                app.router.lifespan_context(app),
                httpx2.AsyncClient(
                    transport=httpx2.ASGITransport(app=app),
                    base_url="http://windflow.test",
                    headers={"Authorization": f"Bearer {mint_token(remote)}"},
                ) as http,
            ):
                assert (
                    await http.post(
                        "/api/v1/services",
                        json={"id": "api", "driver": "process", "config": {"command": ["sleep", "1"]}},
                    )
                ).status_code == 201
                body = (await http.get("/api/v1/services/api/logs?lines=2&stream=stdout")).json()
                assert body["source"] == "redis"
                assert [x["line"] for x in body["lines"]] == ["three", "half done"]
        finally:
            await res.bus.close()

        # follow from Redis: a line shipped after the follow began arrives
        follow = source.follow("api")
        pending = asyncio.ensure_future(anext(follow))
        await asyncio.sleep(0.3)
        with out.open("a") as f:
            f.write("four\n")
        await again.ship_once()
        item = await asyncio.wait_for(pending, 5)
        assert item.line == "four" and item.stream == "stdout"
        await follow.aclose()
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def test_file_source_follow_sees_a_file_created_later(tmp_path) -> None:
    source = FileLogSource(tmp_path, poll=0.05)
    follow = source.follow("late")
    pending = asyncio.ensure_future(anext(follow))
    await asyncio.sleep(0.2)
    (tmp_path / "late.err.log").write_text("born\n")
    item = await asyncio.wait_for(pending, 5)
    assert (item.stream, item.line) == ("stderr", "born")
    await follow.aclose()
