"""Built-in config templates, written (or refreshed) at start-up."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from windflow.persistence.repositories import TemplateRepository

BUILTIN_TEMPLATES: list[dict[str, Any]] = [
    {
        "name": "http-process",
        "description": "A local process with an HTTP health endpoint",
        "parameters": [
            {"name": "command", "description": "argv list", "required": True},
            {"name": "port", "description": "HTTP port", "required": True},
            {"name": "health_path", "default": "/health"},
            {"name": "depends_on", "default": []},
        ],
        "content": {
            "driver": "process",
            "config": {"command": "${command}"},
            "depends_on": "${depends_on}",
            "health": {
                "kind": "http",
                "url": "http://127.0.0.1:${port}${health_path}",
                "interval": "2s",
                "timeout": "1s",
                "failure_threshold": 3,
                "start_period": "10s",
            },
        },
    },
    {
        "name": "tcp-process",
        "description": "A local process that listens on a TCP port (databases, caches, brokers)",
        "parameters": [
            {"name": "command", "required": True},
            {"name": "port", "required": True},
            {"name": "depends_on", "default": []},
        ],
        "content": {
            "driver": "process",
            "config": {"command": "${command}"},
            "depends_on": "${depends_on}",
            "health": {"kind": "tcp", "port": "${port}", "interval": "2s", "timeout": "1s", "failure_threshold": 3},
        },
    },
    {
        "name": "systemd-unit",
        "description": "A systemd unit driven through systemctl",
        "parameters": [{"name": "unit", "required": True}, {"name": "port", "default": 80}],
        "content": {
            "driver": "command",
            "config": {
                "start": {"run": ["systemctl", "start", "${unit}"], "timeout": "60s"},
                "stop": {"run": ["systemctl", "stop", "${unit}"], "timeout": "60s"},
                "restart": {"run": ["systemctl", "restart", "${unit}"], "timeout": "90s"},
                "status": {"run": ["systemctl", "is-active", "--quiet", "${unit}"], "timeout": "10s"},
            },
            "health": {"kind": "tcp", "port": "${port}"},
        },
    },
    {
        "name": "postgres",
        "description": "A PostgreSQL server checked with SELECT 1",
        "parameters": [
            {"name": "data_dir", "required": True},
            {"name": "port", "default": 5432},
            {"name": "dsn", "default": "postgresql://postgres@127.0.0.1:5432/postgres"},
        ],
        "content": {
            "driver": "process",
            "config": {"command": ["postgres", "-D", "${data_dir}", "-p", "${port}"], "stop_signal": "SIGINT"},
            "health": {"kind": "postgres", "dsn": "${dsn}", "interval": "2s", "timeout": "2s", "start_period": "30s"},
        },
    },
    {
        "name": "redis",
        "description": "A Redis server checked with PING",
        "parameters": [{"name": "port", "default": 6379}],
        "content": {
            "driver": "process",
            "config": {"command": ["redis-server", "--port", "${port}", "--save", ""]},
            "health": {"kind": "redis", "url": "redis://127.0.0.1:${port}/0", "interval": "2s", "timeout": "1s"},
        },
    },
]


async def seed_templates(*, session: AsyncSession) -> None:
    repo = TemplateRepository()
    for t in BUILTIN_TEMPLATES:
        await repo.upsert(
            session=session,
            name=t["name"],
            description=t["description"],
            parameters=t["parameters"],
            content=t["content"],
            builtin=True,
        )
