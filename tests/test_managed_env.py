"""What a managed process sees: never the worker's environment; its own env, env_file, allow-list and user."""

from __future__ import annotations

import asyncio
import os
import pwd
from pathlib import Path

import pytest

from windflow.domain.errors import DriverFailed
from windflow.domain.models import ExecHealth, ServiceSpec
from windflow.drivers.command import CommandDriver
from windflow.drivers.environment import DEFAULT_PATH
from windflow.drivers.process import SPAWN_TOKEN_ENV, ProcessDriver
from windflow.probes.exec import ExecProbe

pytestmark = pytest.mark.asyncio(loop_scope="session")

WORKER_SECRETS = {
    "WINDFLOW_JWT_SECRET": "j" * 48,
    "WINDFLOW_DATABASE_URL": "postgresql://u:pw@db/x",
    "WINDFLOW_CODEC_KEYS": "k1",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "SHARED_NAME": "from-worker",
}
DUMP = "env; echo uid=$(id -u) gid=$(id -g); echo END"


@pytest.fixture
def worker_env(monkeypatch):
    for k, v in WORKER_SECRETS.items():
        monkeypatch.setenv(k, v)


def env_lines(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            out[key] = value
    return out


async def run_process(tmp_path: Path, **config) -> str:
    spec = ServiceSpec.model_validate(
        {"id": "dump", "driver": "process", "config": {"command": ["sh", "-c", DUMP], **config}}
    )
    driver = ProcessDriver(data_dir=tmp_path / "data")
    try:
        result = await driver.start(spec)
        assert result.ok, result
        out = driver.log_paths("dump")[0]
        for _ in range(500):
            if out.exists() and "END" in out.read_text():
                return out.read_text()
            await asyncio.sleep(0.01)
        raise AssertionError(f"no output: {out}")
    finally:
        driver.close()


async def test_process_gets_none_of_the_workers_variables(tmp_path, worker_env):
    (tmp_path / "app.env").write_text("# comment\nFROM_FILE='file value'\nSHARED_NAME=file-wins-over-worker\n")
    text = await run_process(
        tmp_path, env={"OWN": "1"}, inherit_env=["SHARED_NAME", "NOT_SET_ANYWHERE"], env_file=str(tmp_path / "app.env")
    )
    env = env_lines(text)
    leaked = {k for k in env if k.startswith("WINDFLOW_") and k != SPAWN_TOKEN_ENV} | (
        {"AWS_SECRET_ACCESS_KEY"} & set(env)
    )
    assert not leaked, leaked
    assert not any(v in text for k, v in WORKER_SECRETS.items() if k != "SHARED_NAME")
    assert env["OWN"] == "1" and env["FROM_FILE"] == "file value"
    assert env["SHARED_NAME"] == "file-wins-over-worker"  # allow-listed, then overridden by the env file
    assert env["PATH"] == DEFAULT_PATH and env["LANG"] and env["HOME"]
    assert "NOT_SET_ANYWHERE" not in env


async def test_allow_listed_variable_passes_through(tmp_path, worker_env):
    env = env_lines(await run_process(tmp_path, inherit_env=["SHARED_NAME"]))
    assert env["SHARED_NAME"] == "from-worker"
    assert "WINDFLOW_JWT_SECRET" not in env


async def test_legacy_inherit_switch_no_longer_passes_the_environment(tmp_path, worker_env):
    spec = ServiceSpec.model_validate(
        {"id": "x", "driver": "process", "config": {"command": ["true"], "inherit_env": True}}
    )
    assert spec.process_config.inherit_env == []
    env = env_lines(await run_process(tmp_path, inherit_env=True))
    assert "WINDFLOW_JWT_SECRET" not in env and "SHARED_NAME" not in env


async def test_missing_env_file_refuses_the_start(tmp_path):
    with pytest.raises(DriverFailed, match="env_file"):
        await run_process(tmp_path, env_file=str(tmp_path / "missing.env"))


async def test_user_and_group_like_systemd(tmp_path):
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() == 0:  # the worker drops privileges in the child
        text = await run_process(tmp_path, user="nobody")
        assert f"uid={nobody.pw_uid} gid={nobody.pw_gid}" in text
        assert env_lines(text)["HOME"] == nobody.pw_dir
        # the log files stay the worker's (opened before the switch)
        assert (tmp_path / "data").stat().st_uid == 0
    else:  # a worker that cannot switch users refuses instead of running the service as itself
        with pytest.raises(DriverFailed, match="cannot run this service as user 'nobody'"):
            await run_process(tmp_path, user="nobody")
    with pytest.raises(DriverFailed, match="does not exist"):
        await run_process(tmp_path, user="no-such-user-xyz")


async def test_command_driver_and_exec_probe_get_a_clean_environment(worker_env):
    spec = ServiceSpec.model_validate(
        {
            "id": "legacy",
            "driver": "command",
            "config": {"start": {"run": "env", "env": {"OWN": "1"}}, "stop": {"run": "true"}},
        }
    )
    started = await CommandDriver().start(spec)
    env = env_lines(started.output)
    assert env["OWN"] == "1" and env["PATH"] == DEFAULT_PATH
    assert not [k for k in env if k.startswith("WINDFLOW_")] and "AWS_SECRET_ACCESS_KEY" not in env
    probe = ExecProbe()
    clean = await probe.check(
        ExecHealth(
            kind="exec",
            command=[
                "sh",
                "-c",
                'test -z "$WINDFLOW_JWT_SECRET$WINDFLOW_DATABASE_URL$AWS_SECRET_ACCESS_KEY" && test "$OWN" = 1',
            ],
            env={"OWN": "1"},
        )
    )
    assert clean.healthy, clean.message


async def test_command_steps_and_exec_probes_run_as_their_user(tmp_path):
    nobody = pwd.getpwnam("nobody")
    spec = ServiceSpec.model_validate(
        {
            "id": "legacy",
            "driver": "command",
            "config": {"start": {"run": "echo uid=$(id -u) home=$HOME", "user": "nobody"}, "stop": {"run": "true"}},
        }
    )
    probe = ExecHealth(kind="exec", command=["sh", "-c", f'test "$(id -u)" = {nobody.pw_uid}'], user="nobody")
    if os.geteuid() == 0:
        started = await CommandDriver().start(spec)
        assert f"uid={nobody.pw_uid} home={nobody.pw_dir}" in started.output
        result = await ExecProbe().check(probe)
        assert result.healthy, result.message
    else:
        with pytest.raises(DriverFailed, match="cannot run this service as user 'nobody'"):
            await CommandDriver().start(spec)
        result = await ExecProbe().check(probe)
        assert not result.healthy and "not root" in result.message
    unknown = await ExecProbe().check(ExecHealth(kind="exec", command=["true"], user="no-such-user-xyz"))
    assert not unknown.healthy and "does not exist" in unknown.message
