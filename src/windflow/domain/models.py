"""The service registry's model: what a service is, how it is driven, probed and restarted.

Everything here is pure pydantic: safe inside workflows and shared by API, store and activities.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)

from windflow.domain.durations import Duration
from windflow.domain.strict import StrictScalars

SERVICE_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$"
_SERVICE_ID = re.compile(SERVICE_ID_PATTERN)

ServiceId = Annotated[
    str,
    Field(
        pattern=SERVICE_ID_PATTERN,
        min_length=1,
        max_length=64,
        description="Slug: lower-case letters, digits, '-' and '_', starting and ending with a letter or digit.",
        examples=["database"],
    ),
]


def is_service_id(value: str) -> bool:
    return bool(_SERVICE_ID.match(value))


#: the id of one replica of a replicated service: the service's id, '/', the replica's index (``web/0``)
UNIT_ID_PATTERN = SERVICE_ID_PATTERN[:-1] + r"(?:/(?:0|[1-9][0-9]{0,2}))?$"
_UNIT_ID = re.compile(UNIT_ID_PATTERN)
#: most replicas of one service
REPLICAS_MAX = 100

UnitId = Annotated[
    str,
    Field(
        pattern=UNIT_ID_PATTERN,
        min_length=1,
        max_length=68,
        description="A service id; windflow gives each replica of a replicated service the id `SERVICE/K`",
        examples=["database", "web/0"],
    ),
]


def is_unit_id(value: str) -> bool:
    """A service id, or a replica's (``web/0``)."""
    return bool(_UNIT_ID.match(value))


def replica_id(service_id: str, index: int) -> str:
    return f"{service_id}/{index}"


def split_unit_id(value: str) -> tuple[str, int | None]:
    """``("web", 2)`` for ``web/2``; ``("web", None)`` for ``web``."""
    base, sep, index = value.partition("/")
    return (base, int(index)) if sep else (value, None)


#: ``{replica}``, ``{replica+N}``, ``{replica-N}`` or ``{replica*N}`` in a replicated service's command, env and
#: probes: the replica's index (plus, minus or times N), e.g. ``--port {replica+9000}``
REPLICA_TEMPLATE = re.compile(r"\{replica(?:\s*([-+*])\s*(\d{1,6}))?\}")


def substitute_replica(text: str, index: int) -> str:
    def one(match: re.Match[str]) -> str:
        op, n = match.group(1), int(match.group(2) or 0)
        return str(index - n if op == "-" else index * n if op == "*" else index + n)

    return REPLICA_TEMPLATE.sub(one, text)


#: a worker host name: lower-case DNS labels (letters, digits, inner hyphens; 1-63 characters) joined by dots
HOST_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
_HOST_NAME = re.compile(HOST_NAME_PATTERN)


def is_host_name(value: str) -> bool:
    return len(value) <= 253 and bool(_HOST_NAME.match(value))


MAX_BODY_DEPTH = 32
"""Deepest nesting of lists and mappings in a free-form value (an HTTP driver's request body)."""


def nesting_depth(value: Any, *, stop_after: int = MAX_BODY_DEPTH) -> int:
    """How deeply lists and mappings nest in ``value`` (a scalar: 0), without recursion; counting stops once past
    ``stop_after`` (so a list that contains itself ends too)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > stop_after:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
    return deepest


class _Strict(StrictScalars):
    """Unknown keys are errors: a typo in a system file must not be silently ignored; numbers and flags are typed
    (``timeout: true`` is an error, not one second)."""

    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


# --------------------------------------------------------------------------- drivers


class DriverKind(StrEnum):
    PROCESS = "process"
    COMMAND = "command"
    HTTP = "http"
    NOOP = "noop"


#: a user or group name (POSIX portable characters, as useradd accepts them) or a numeric id
UnixName = Annotated[str, Field(pattern=r"^(?:[0-9]{1,10}|[a-zA-Z_][a-zA-Z0-9_.-]{0,31}\$?)$", max_length=33)]


class ProcessConfig(_Strict):
    """A local process started and watched by the worker."""

    driver: Literal["process"] = Field("process", exclude=True, repr=False)
    command: list[str] = Field(
        min_length=1,
        description="argv; never run through a shell (numbers are taken as their text)",
        examples=[["python3", "-m", "http.server"]],
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables of the process. It never inherits the worker's environment: it gets "
        "PATH, LANG and HOME, the variables named in `inherit_env`, `env_file`, then these",
    )
    cwd: str | None = Field(None, description="Working directory (relative paths resolve against the system file)")
    inherit_env: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Names of worker environment variables passed through (an allow-list; `true`/`false` from "
        "older files mean none)",
    )
    env_file: str | None = Field(
        None, max_length=4096, description="A dotenv file (KEY=value lines) read at each start, before `env`"
    )
    user: UnixName | None = Field(
        None,
        description="Run as this user (name or uid), like systemd's User=: the worker must run as root to "
        "switch users, and refuses to start the service otherwise",
    )
    group: UnixName | None = Field(None, description="Run with this group (default: the user's primary group)")
    stop_signal: Literal["SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2"] = "SIGTERM"
    stop_grace: Duration = Field(10.0, description="Time between the stop signal and SIGKILL")
    log_max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Size cap of each log file before rotation")

    @field_validator("command", "env", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        """argv and environment are text: a number (a template's ``${port}``, a YAML ``8080``) is its text."""

        def text(v: Any) -> Any:
            return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

        if isinstance(value, list):
            return [text(v) for v in value]
        if isinstance(value, dict):
            return {k: text(v) for k, v in value.items()}
        return value

    @field_validator("command")
    @classmethod
    def _program(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError('command[0], the program, must not be empty (later arguments may be, like `--save ""`)')
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name or "=" in name or "\x00" in name:
                raise ValueError(f"invalid environment variable name {name!r}")
        return value

    @field_validator("inherit_env", mode="before")
    @classmethod
    def _inherit_names(cls, value: Any) -> Any:
        if isinstance(value, bool):  # the former switch: the worker's environment is never passed whole
            return []
        if isinstance(value, list):
            for name in value:
                if not isinstance(name, str) or not name or "=" in name or "\x00" in name:
                    raise ValueError(f"invalid environment variable name {name!r}")
        return value


class ShellCommand(_Strict):
    """One command of the `command` driver: argv list (preferred) or a shell string run with `sh -c`."""

    run: list[Annotated[str, Field(min_length=1)]] | Annotated[str, Field(min_length=1)] = Field(
        description="argv list, or a string run through `/bin/sh -c` (the string is yours, never interpolated)"
    )
    timeout: Duration = 30.0
    env: dict[str, str] = Field(
        default_factory=dict, description="Its environment, besides PATH, LANG and HOME (never the worker's)"
    )
    cwd: str | None = None
    user: UnixName | None = Field(None, description="Run as this user (the worker must run as root to switch)")
    group: UnixName | None = Field(None, description="Run with this group (default: the user's primary group)")


class CommandConfig(_Strict):
    """User-given commands for start / stop / restart / status: systemd units, init scripts, remote hosts."""

    driver: Literal["command"] = Field("command", exclude=True, repr=False)
    start: ShellCommand
    stop: ShellCommand
    restart: ShellCommand | None = Field(None, description="Defaults to stop then start")
    status: ShellCommand | None = Field(None, description="Exit 0 means running; absent means unknown")


class HttpEndpoint(_Strict):
    url: str = Field(pattern=r"^https?://", examples=["http://127.0.0.1:9000/control/start"])
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])

    @field_validator("body")
    @classmethod
    def _body_depth(cls, value: Any) -> Any:
        if nesting_depth(value) > MAX_BODY_DEPTH:  # serializing it (store, API answers) would fail
            raise ValueError(f"body nested deeper than {MAX_BODY_DEPTH} levels")
        return value


class HttpDriverConfig(_Strict):
    """Control endpoints of a service that exposes them (an agent, a cloud API, a webhook relay)."""

    driver: Literal["http"] = Field("http", exclude=True, repr=False)
    start: HttpEndpoint
    stop: HttpEndpoint
    restart: HttpEndpoint | None = None
    status: HttpEndpoint | None = None
    auth_token: str | None = Field(None, description="Sent as `Authorization: Bearer ...`; redacted everywhere")
    timeout: Duration = 10.0
    verify_tls: bool = True


class NoopConfig(_Strict):
    """Starts nothing; for dry runs and for services something else manages."""

    driver: Literal["noop"] = Field("noop", exclude=True, repr=False)


DriverConfig = Annotated[
    ProcessConfig | CommandConfig | HttpDriverConfig | NoopConfig,
    Field(discriminator="driver"),
]

DRIVER_CONFIG_MODELS: dict[DriverKind, type[BaseModel]] = {
    DriverKind.PROCESS: ProcessConfig,
    DriverKind.COMMAND: CommandConfig,
    DriverKind.HTTP: HttpDriverConfig,
    DriverKind.NOOP: NoopConfig,
}

# --------------------------------------------------------------------------- health


MIN_PROBE_INTERVAL = 0.1
"""The shortest probe interval: faster probing is load on the service, not monitoring."""
MAX_BODY_REGEX = 1000
"""Longest ``body_regex`` accepted (the probe also bounds each match in time)."""


class ProbeKind(StrEnum):
    HTTP = "http"
    TCP = "tcp"
    EXEC = "exec"
    POSTGRES = "postgres"
    REDIS = "redis"


class _HealthBase(_Strict):
    interval: Duration = Field(2.0, ge=MIN_PROBE_INTERVAL, description="Time between probes (at least 100ms)")
    timeout: Duration = Field(1.0, gt=0, description="A probe that takes longer fails")
    failure_threshold: int = Field(3, ge=1, le=100, description="Consecutive failures before unhealthy")
    success_threshold: int = Field(1, ge=1, le=100, description="Consecutive passes before healthy")
    start_period: Duration = Field(0.0, ge=0, description="Failures are ignored this long after a start")


class HttpHealth(_HealthBase):
    kind: Literal["http"]
    url: str = Field(pattern=r"^https?://", examples=["http://127.0.0.1:8000/health"])
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expect_status: list[int] = Field(default_factory=lambda: [200])
    body_contains: str | None = None
    body_regex: str | None = Field(None, max_length=MAX_BODY_REGEX)
    max_latency: Duration | None = Field(None, description="Slower answers count as failures")
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True

    @field_validator("expect_status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @field_validator("body_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value


def _port_or_template(value: Any) -> int | str:
    """A port number, or a ``{replica…}`` template that becomes one per replica (one error location either way)."""
    if isinstance(value, str) and REPLICA_TEMPLATE.fullmatch(value.strip()):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    if isinstance(value, str) and value.strip().isdigit() and 1 <= int(value) <= 65535:
        return int(value)
    raise ValueError("must be a port (1-65535), or a template such as `{replica+9000}` in a replicated service")


PortOrTemplate = Annotated[
    int | str,
    PlainValidator(_port_or_template),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 65535},
                {"type": "string", "pattern": REPLICA_TEMPLATE.pattern},
            ]
        }
    ),
]


class TcpHealth(_HealthBase):
    kind: Literal["tcp"]
    host: str = "127.0.0.1"
    port: PortOrTemplate = Field(
        description="A port; a replicated service may give a template such as `{replica+9000}` (9000, 9001, …)"
    )


class ExecHealth(_HealthBase):
    kind: Literal["exec"]
    command: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, description="argv; exit 0 is healthy")
    env: dict[str, str] = Field(
        default_factory=dict, description="Its environment, besides PATH, LANG and HOME (never the worker's)"
    )
    cwd: str | None = None
    user: UnixName | None = Field(None, description="Run as this user (the worker must run as root to switch)")
    group: UnixName | None = Field(None, description="Run with this group (default: the user's primary group)")


class PostgresHealth(_HealthBase):
    kind: Literal["postgres"]
    dsn: str = Field(
        description="libpq connection string or URL; a password in it is redacted",
        examples=["postgresql://app@127.0.0.1:5432/app"],
    )
    query: str = "SELECT 1"


class RedisHealth(_HealthBase):
    kind: Literal["redis"]
    url: str = Field(pattern=r"^rediss?://", examples=["redis://127.0.0.1:6379/0"])


HealthSpec = Annotated[
    HttpHealth | TcpHealth | ExecHealth | PostgresHealth | RedisHealth,
    Field(discriminator="kind"),
]

# --------------------------------------------------------------------------- restart policy


class GiveUp(StrEnum):
    ESCALATE = "escalate"  # notify, leave the service stopped
    ESCALATE_AND_RETRY = "escalate_and_retry"  # notify, keep retrying at backoff_max
    ASK = "ask"  # notify, wait for an operator's decision


class RestartPolicy(_Strict):
    max_attempts: int = Field(5, ge=1, le=1000, description="Restarts within `reset_after` before giving up")
    backoff: Duration = Field(1.0, ge=0, description="Delay before the second attempt")
    multiplier: float = Field(2.0, ge=1.0, le=10.0)
    backoff_max: Duration = Field(60.0, ge=0)
    jitter: float = Field(0.1, ge=0.0, le=1.0, description="Fraction of the delay added at random")
    reset_after: Duration = Field(300.0, ge=0, description="Healthy this long resets the attempt count")
    on_give_up: GiveUp = GiveUp.ESCALATE
    ask_timeout: Duration = Field(3600.0, gt=0, description="With on_give_up=ask: wait this long for a decision")

    @model_validator(mode="after")
    def _cap(self) -> RestartPolicy:
        if self.backoff_max < self.backoff:
            raise ValueError("backoff_max must be at least backoff")
        return self

    def delay_before(self, attempt: int) -> float:
        """Delay (seconds, without jitter) before ``attempt`` (1-based); attempt 1 runs at once."""
        if attempt <= 1 or self.backoff == 0:
            return 0.0
        try:
            delay = self.backoff * (self.multiplier ** (attempt - 2))
        except OverflowError:  # a float power overflows long past the cap (attempts go on with escalate_and_retry)
            return self.backoff_max
        return min(delay, self.backoff_max)

    def jittered(self, delay: float, draw: float) -> float:
        """``delay`` plus up to ``jitter`` of itself: ``draw`` in [0, 1) is the caller's random draw (in a
        workflow, from ``workflow.random()``, so a replay waits the same)."""
        return delay * (1.0 + self.jitter * draw)


# --------------------------------------------------------------------------- kinds and dependency conditions


class ServiceKind(StrEnum):
    SERVICE = "service"  # long-running: started, probed, supervised
    JOB = "job"  # runs to completion (a migration, a seed): success is an exit code


class DependencyCondition(StrEnum):
    STARTED = "started"  # the dependency's process was started
    HEALTHY = "healthy"  # the dependency passes its readiness probe (a job: that, or it completed successfully)
    COMPLETED_SUCCESSFULLY = "completed_successfully"  # a job that exited with one of its success codes


class Dependency(_Strict):
    condition: DependencyCondition = Field(DependencyCondition.HEALTHY, description="When the dependant may start")


def _dependency_map(value: Any) -> Any:
    """``depends_on`` as written: a list of ids (condition ``healthy``) or a map id -> ``{condition: ...}``."""
    if isinstance(value, dict):
        return {k: ({} if v is None else v) for k, v in value.items()}
    if not isinstance(value, list | tuple) or not all(isinstance(d, str) for d in value):
        return value  # pydantic names what is wrong
    dupes = sorted(d for d, n in Counter(value).items() if n > 1)
    if dupes:
        raise ValueError(f"listed more than once: {', '.join(dupes)}")
    return {d: {} for d in value}


# --------------------------------------------------------------------------- service

SECRET_KEY_PATTERN = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential|^key$|_key$)", re.IGNORECASE
)


#: the job-only fields and their values on a service
_JOB_DEFAULTS: dict[str, Any] = {"success_exit_codes": [0], "timeout": None, "run": "always"}


def _probe_address(probe: Any) -> Any:
    """Where a probe looks (an http/redis URL, a tcp port), or None for a probe with no address of its own."""
    if probe is None:
        return None
    if isinstance(probe, TcpHealth):
        return probe.port
    return getattr(probe, "url", None)


def _replica_templates(spec: ServiceSpec) -> list[str]:
    """Where a ``{replica}`` template appears (command, env, probes), as field paths."""
    found: list[str] = []
    config = spec.config
    if isinstance(config, ProcessConfig):
        found += [f"config.command[{i}]" for i, a in enumerate(config.command) if REPLICA_TEMPLATE.search(a)]
        found += [f"config.env.{k}" for k, v in config.env.items() if REPLICA_TEMPLATE.search(v)]
    for name in ("health", "readiness", "liveness"):
        probe = getattr(spec, name)
        if probe is None:
            continue
        for key, value in probe.model_dump(mode="json").items():
            if REPLICA_TEMPLATE.search(json.dumps(value)):
                found.append(f"{name}.{key}")
    return found


class ServiceSpec(_Strict):
    """A service as declared in the system file and stored in the registry (or one replica of a replicated
    service, id ``SERVICE/K``, which windflow derives from it: see :meth:`replica_spec`)."""

    id: UnitId
    description: str = Field("", max_length=2000)
    labels: dict[Annotated[str, Field(max_length=63)], Annotated[str, Field(max_length=255)]] = Field(
        default_factory=dict
    )
    driver: DriverKind
    config: DriverConfig
    kind: ServiceKind = Field(ServiceKind.SERVICE, description="`service` (long-running) or `job` (runs to completion)")
    depends_on: dict[ServiceId, Dependency] = Field(
        default_factory=dict,
        description="Services this one needs: a list of ids (condition `healthy`) or a map id -> "
        "`{condition: started | healthy | completed_successfully}`",
        json_schema_extra={
            "examples": [
                ["database"],
                {"database": {"condition": "healthy"}, "migrate": {"condition": "completed_successfully"}},
            ]
        },
    )
    health: HealthSpec | None = Field(
        None, description="One probe for both readiness and liveness (what `readiness` or `liveness` leaves unset)"
    )
    readiness: HealthSpec | None = Field(
        None,
        description="Ready to serve: gates dependants and initializations; failing it makes the service "
        "`not_ready`, never restarts it",
    )
    liveness: HealthSpec | None = Field(
        None, description="Alive: failing it `failure_threshold` times in a row restarts the service"
    )
    success_exit_codes: list[Annotated[int, Field(ge=0, le=255)]] = Field(
        default_factory=lambda: [0], min_length=1, description="A job: exit codes that mean success"
    )
    timeout: Duration | None = Field(
        None, gt=0, description="A job: longest run of one attempt before it is stopped and counted as failed"
    )
    run: Literal["always", "once"] = Field(
        "always",
        description="A job: `always` runs on every initialization that includes it; `once` is skipped "
        "once it succeeded with the applied config version",
    )
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    monitored: bool = Field(True, description="Supervise the service and recover it when it fails")
    restart_with_dependencies: bool = Field(
        False, description="Restart this service after one of its dependencies was recovered"
    )
    host: str | None = Field(
        None,
        max_length=253,
        description="Run the driver and probes on this worker host only: the worker started with "
        "`windflow worker --host NAME` (lower-case DNS labels separated by dots)",
    )
    secret_keys: list[str] = Field(
        default_factory=list, description="Extra config keys whose values are secrets (redacted in responses)"
    )
    replicas: int | None = Field(
        None,
        ge=1,
        le=REPLICAS_MAX,
        description="Run N processes of this `process` service, `SERVICE/0` … `SERVICE/N-1`, each watched and "
        "recovered on its own; `{replica}` (or `{replica+N}`) in the command, env and probe URL/port is "
        "replaced by the replica's index. Unset: one process with the service's own id",
    )
    min_ready: int | None = Field(
        None,
        ge=0,
        le=REPLICAS_MAX,
        description="A replicated service is healthy (and its dependants may start) once this many replicas are "
        "ready (default: all of them)",
    )

    @model_validator(mode="before")
    @classmethod
    def _tag_config(cls, data: Any) -> Any:
        # The config's type follows the sibling `driver` field: tag it so the union discriminates on it.
        if isinstance(data, dict) and "config" in data:
            driver = data.get("driver")
            config = data.get("config")
            if config is None:
                config = {}
            if isinstance(config, dict) and isinstance(driver, str):
                data = {**data, "config": {**config, "driver": driver}}
            elif isinstance(config, BaseModel) and isinstance(driver, str):
                data = {**data, "config": {**config.model_dump(), "driver": driver}}
        elif isinstance(data, dict) and data.get("driver") == DriverKind.NOOP:
            data = {**data, "config": {"driver": "noop"}}
        return data

    @field_validator("depends_on", mode="before")
    @classmethod
    def _deps_as_map(cls, value: Any) -> Any:
        return _dependency_map(value)

    @field_serializer("depends_on")
    def _deps_compact(self, value: dict[str, Dependency]) -> list[str] | dict[str, dict[str, str]]:
        """Written back the short way (a list) when every condition is the default, as most files say it."""
        if all(d.condition == DependencyCondition.HEALTHY for d in value.values()):
            return list(value)
        return {k: {"condition": d.condition.value} for k, d in value.items()}

    @field_validator("host")
    @classmethod
    def _host_name(cls, value: str | None) -> str | None:
        if value is not None and not is_host_name(value):
            raise ValueError(
                "must be a host name: lower-case letters, digits and inner '-', in labels of at most "
                "63 characters separated by '.'"
            )
        return value

    @model_validator(mode="after")
    def _self_dependency(self) -> ServiceSpec:
        if self.id in self.depends_on:
            raise ValueError(f"service {self.id!r} cannot depend on itself")
        return self

    @model_validator(mode="after")
    def _replica_fields(self) -> ServiceSpec:
        base, index = split_unit_id(self.id)
        if index is not None:  # one replica: derived by windflow, already substituted
            if self.replicas is not None or self.min_ready is not None:
                raise ValueError(f"{self.id}: a replica has no `replicas` of its own")
            return self
        templated = _replica_templates(self)
        if self.replicas is None:
            if self.min_ready is not None:
                raise ValueError("min_ready: only with `replicas`")
            if templated:
                raise ValueError(f"{templated[0]}: `{{replica}}` is replaced only in a service with `replicas`")
            return self
        if self.driver != DriverKind.PROCESS:
            raise ValueError(f"replicas: only for the `process` driver, not {self.driver.value!r}")
        if self.kind != ServiceKind.SERVICE:
            raise ValueError("replicas: only for `kind: service` (a job runs once)")
        if len(self.id) > 64 - 4:
            raise ValueError("replicas: the service id must be at most 60 characters (its replicas are `id/K`)")
        if self.min_ready is not None and self.min_ready > self.replicas:
            raise ValueError(f"min_ready: {self.min_ready} is more than the {self.replicas} replicas")
        if self.replicas > 1:
            for name in ("health", "readiness", "liveness"):
                probe = getattr(self, name)
                where = _probe_address(probe)
                if where is not None and not REPLICA_TEMPLATE.search(str(where)):
                    raise ValueError(
                        f"{name}: every replica would be probed at {where}: put `{{replica}}` (or "
                        "`{replica+N}`) in its port, as in the command"
                    )
        return self

    @model_validator(mode="after")
    def _job_fields(self) -> ServiceSpec:
        if self.kind == ServiceKind.SERVICE:
            given = [name for name, default in _JOB_DEFAULTS.items() if getattr(self, name) != default]
            if given:
                raise ValueError(f"{', '.join(given)}: only for `kind: job`")
        elif self.driver not in (DriverKind.PROCESS, DriverKind.NOOP):
            raise ValueError(f"a job runs with the process driver (or noop), not {self.driver.value!r}")
        return self

    @property
    def is_job(self) -> bool:
        return self.kind == ServiceKind.JOB

    def process_grace(self) -> float:
        """Seconds a stop may take before SIGKILL (a process service's ``stop_grace``; 0 for other drivers)."""
        return self.config.stop_grace if isinstance(self.config, ProcessConfig) else 0.0

    def readiness_spec(self) -> HealthSpec | None:
        """The probe that says the service is ready (gates dependants and initializations): ``readiness``, else
        ``health``."""
        return self.readiness if self.readiness is not None else self.health

    def liveness_spec(self) -> HealthSpec | None:
        """The probe whose failures restart the service: ``liveness``, else ``health``."""
        return self.liveness if self.liveness is not None else self.health

    @property
    def separate_readiness(self) -> bool:
        """Readiness is probed apart from liveness (a failing readiness then never restarts the service)."""
        return self.readiness_spec() is not None and self.readiness_spec() != self.liveness_spec()

    def conditions(self) -> dict[str, str]:
        """Each dependency's condition, by id."""
        return {k: d.condition.value for k, d in self.depends_on.items()}

    def content(self) -> dict[str, Any]:
        """The versioned part of a service: everything but its id, as JSON-ready data (a service leaves out the
        job-only fields, so its content reads, and hashes, as before jobs existed)."""
        unset = {name for name in ("readiness", "liveness", "replicas", "min_ready") if getattr(self, name) is None}
        if self.kind == ServiceKind.JOB:
            return self.model_dump(mode="json", exclude={"id", *unset})
        return self.model_dump(mode="json", exclude={"id", "kind", *_JOB_DEFAULTS, *unset})

    @property
    def process_config(self) -> ProcessConfig:
        assert isinstance(self.config, ProcessConfig)
        return self.config

    @property
    def replicated(self) -> bool:
        """A replicated service (``replicas`` set): its processes are its replicas, never the service itself."""
        return self.replicas is not None

    def ready_needed(self) -> int:
        """Replicas that must be ready for the service to count as healthy."""
        return self.min_ready if self.min_ready is not None else (self.replicas or 1)

    def replica_ids(self, count: int | None = None) -> list[str]:
        return [replica_id(self.id, k) for k in range((self.replicas or 0) if count is None else count)]

    def replica_spec(self, index: int) -> ServiceSpec:
        """Replica ``index`` of this replicated service: id ``SERVICE/index``, ``{replica}`` replaced in the
        command, env and probes, no ``replicas`` of its own; everything else as the service says."""
        data = self.model_dump(mode="json", exclude={"replicas", "min_ready"})
        data["id"] = replica_id(self.id, index)
        config = data["config"]
        config["command"] = [substitute_replica(a, index) for a in config.get("command") or []]
        config["env"] = {k: substitute_replica(v, index) for k, v in (config.get("env") or {}).items()}
        for name in ("health", "readiness", "liveness"):
            probe = data.get(name)
            if not probe:
                continue
            for key in ("url", "dsn", "host"):
                if isinstance(probe.get(key), str):
                    probe[key] = substitute_replica(probe[key], index)
            if isinstance(probe.get("port"), str):
                probe["port"] = int(substitute_replica(probe["port"], index))
            if probe.get("command"):
                probe["command"] = [substitute_replica(a, index) for a in probe["command"]]
            if probe.get("env"):
                probe["env"] = {k: substitute_replica(v, index) for k, v in probe["env"].items()}
        return ServiceSpec.model_validate(data)


class ServiceState(StrEnum):
    """What windflow last knew about a service (stored; live detail comes from supervisors)."""

    UNKNOWN = "unknown"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"
    STOPPING = "stopping"  # desired stopped, the process not gone yet
    FAILED = "failed"
    RECOVERING = "recovering"
    BACKING_OFF = "backing_off"
    BLOCKED = "blocked"
    GAVE_UP = "gave_up"
    COMPLETED = "completed"  # a job that exited with a success code
    NOT_READY = "not_ready"  # alive (liveness passes) but its readiness probe fails: dependants wait, no restart
