"""The system file (``windflow.yaml``): every service of a system, validated all together.

Parsing is pure: the caller reads the file; this module turns text into specs or a complete list of
problems, each with the path where it sits (``services.api.health.port``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from windflow.domain.errors import ConfigInvalid
from windflow.domain.graph import find_cycle, format_cycle, missing_dependencies
from windflow.domain.models import DependencyCondition, ProcessConfig, ServiceSpec, is_service_id
from windflow.domain.notifications import ChannelConfig, NotificationsSection

SYSTEM_FILE_VERSION = 1
_UNION_FIELDS = {"config", "health", "readiness", "liveness"}


class Problem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str = "value_error"

    @property
    def path(self) -> str:
        return ".".join(str(p) for p in self.loc)


def problems_from(exc: ValidationError, prefix: Iterable[str | int] = ()) -> list[Problem]:
    """Pydantic errors as :class:`Problem` s; discriminator tags are dropped from the path."""
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        if len(loc) >= 2 and loc[0] in _UNION_FIELDS and isinstance(loc[1], str) and "-" not in loc[1]:
            tag = loc[1]
            if tag in {"process", "command", "http", "noop", "tcp", "exec", "postgres", "redis"}:
                loc = [loc[0], *loc[2:]]
        msg = str(err["msg"]).removeprefix("Value error, ")
        out.append(Problem(loc=[*prefix, *loc], msg=msg, type=str(err["type"])))
    return out


def graph_problems(graph: Mapping[str, list[str]], prefix: Iterable[str | int] = ("services",)) -> list[Problem]:
    problems: list[Problem] = []
    for node, deps in sorted(missing_dependencies(graph).items()):
        problems.append(
            Problem(loc=[*prefix, node, "depends_on"], msg=f"unknown service(s): {', '.join(deps)}", type="missing")
        )
    if not problems:
        cycle = find_cycle(graph)
        if cycle:
            problems.append(
                Problem(
                    loc=[*prefix, cycle[0], "depends_on"], msg=f"dependency cycle: {format_cycle(cycle)}", type="cycle"
                )
            )
    return problems


def condition_problems(specs: Iterable[ServiceSpec], prefix: Iterable[str | int] = ("services",)) -> list[Problem]:
    """Conditions that can never be met: ``completed_successfully`` on a service (it never completes), ``healthy``
    on a job that has no probe (it has nothing to pass but its completion: say ``completed_successfully``)."""
    by_id = {s.id: s for s in specs}
    problems: list[Problem] = []
    for spec in by_id.values():
        for dep, cond in spec.depends_on.items():
            target = by_id.get(dep)
            if target is None:
                continue
            where = [*prefix, spec.id, "depends_on", dep, "condition"]
            if cond.condition == DependencyCondition.COMPLETED_SUCCESSFULLY and not target.is_job:
                problems.append(
                    Problem(
                        loc=where,
                        type="condition",
                        msg=(
                            f"{dep!r} is a service, it never completes: use `healthy` or `started` "
                            "(`completed_successfully` is for a `kind: job`)"
                        ),
                    )
                )
            elif cond.condition == DependencyCondition.HEALTHY and target.is_job and target.readiness_spec() is None:
                problems.append(
                    Problem(
                        loc=where,
                        type="condition",
                        msg=(
                            f"{dep!r} is a job without a probe, it is never healthy: use `completed_successfully` "
                            "(or `started`)"
                        ),
                    )
                )
    return problems


class SystemFile(BaseModel):
    version: int = Field(SYSTEM_FILE_VERSION, description="Format version of the file")
    services: list[ServiceSpec]
    notifications: NotificationsSection | None = Field(
        None, description="Escalation channels; absent = leave the stored channels as they are"
    )


MAX_DOCUMENT_VALUES = 1_000_000
"""Most values (keys, items, scalars) a system document may hold once YAML aliases are expanded: a few nested
aliases can otherwise stand for billions of values (the "billion laughs"), or for a list that contains itself."""


def _expands_beyond(data: Any, limit: int) -> bool:
    """True if ``data``, shared references counted each time they occur, holds more than ``limit`` values."""
    count = 0
    stack = [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_yaml(text: str) -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigInvalid(
            f"the system file is not valid YAML{where}", details=[{"loc": [], "msg": str(exc), "type": "yaml"}]
        ) from None
    except RecursionError:
        raise ConfigInvalid(
            "the system file is nested too deeply", details=[{"loc": [], "msg": "nested too deeply", "type": "yaml"}]
        ) from None
    if _expands_beyond(data, MAX_DOCUMENT_VALUES):
        raise ConfigInvalid(
            f"the system file expands to more than {MAX_DOCUMENT_VALUES} values (YAML aliases)",
            details=[{"loc": [], "msg": "too many values once aliases are expanded", "type": "yaml"}],
        )
    return data


def load_system(data: Any, *, base_dir: str | None = None) -> SystemFile:
    """Validate a whole system document. Raises :class:`ConfigInvalid` listing every problem."""
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise ConfigInvalid(
            "the system file must be a mapping with a 'services' key",
            details=[Problem(loc=[], msg="expected a mapping").model_dump()],
        )
    # keys may be anything YAML can make (null, numbers, booleans): name them by their text
    unknown = sorted((key for key in data if key not in {"version", "services", "notifications"}), key=repr)
    for key in unknown:
        loc = key if isinstance(key, str | int) and not isinstance(key, bool) else repr(key)
        problems.append(Problem(loc=[loc], msg="unknown top-level key", type="extra_forbidden"))
    version = data.get("version", SYSTEM_FILE_VERSION)
    if version != SYSTEM_FILE_VERSION:
        problems.append(Problem(loc=["version"], msg=f"unsupported version {version!r} (expected 1)"))
    notifications = _load_notifications(data, problems)
    raw_services = data.get("services")
    if not isinstance(raw_services, dict):
        problems.append(Problem(loc=["services"], msg="expected a mapping of service id to service", type="dict_type"))
        raise ConfigInvalid(_summary(problems), details=[p.model_dump() for p in problems])
    specs: list[ServiceSpec] = []
    for sid, body in raw_services.items():
        sid_text = str(sid)
        if not is_service_id(sid_text):
            problems.append(Problem(loc=["services", sid_text], msg="invalid service id: use a-z, 0-9, '-', '_'"))
            continue
        if body is None:
            body = {}
        if not isinstance(body, dict):
            problems.append(Problem(loc=["services", sid_text], msg="expected a mapping", type="dict_type"))
            continue
        if "id" in body and body["id"] != sid_text:
            problems.append(Problem(loc=["services", sid_text, "id"], msg="id differs from the key"))
            continue
        try:
            spec = ServiceSpec.model_validate({**body, "id": sid_text})
        except ValidationError as exc:
            problems.extend(problems_from(exc, ["services", sid_text]))
            continue
        specs.append(resolve_paths(spec, base_dir) if base_dir else spec)
    if not problems:
        problems.extend(graph_problems({s.id: list(s.depends_on) for s in specs}))
    if not problems:
        problems.extend(condition_problems(specs))
    if problems:
        raise ConfigInvalid(_summary(problems), details=[p.model_dump() for p in problems])
    return SystemFile(version=SYSTEM_FILE_VERSION, services=specs, notifications=notifications)


def _load_notifications(data: dict[str, Any], problems: list[Problem]) -> NotificationsSection | None:
    if "notifications" not in data:
        return None
    raw = data["notifications"]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(
            Problem(loc=["notifications"], msg="expected a mapping with a 'channels' list", type="dict_type")
        )
        return None
    for key in sorted(set(raw) - {"channels"}, key=str):
        problems.append(Problem(loc=["notifications", str(key)], msg="unknown key", type="extra_forbidden"))
    raw_channels = raw.get("channels") or []
    if not isinstance(raw_channels, list):
        problems.append(Problem(loc=["notifications", "channels"], msg="expected a list of channels", type="list_type"))
        return None
    channels: list[ChannelConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(raw_channels):
        try:
            channel = ChannelConfig.model_validate(item)
        except ValidationError as exc:
            problems.extend(problems_from(exc, ["notifications", "channels", i]))
            channel = None
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name in seen:
            problems.append(
                Problem(loc=["notifications", "channels", i, "name"], msg=f"channel {name!r} is listed more than once")
            )
        elif isinstance(name, str):
            seen.add(name)
        if channel is not None:
            channels.append(channel)
    return NotificationsSection(channels=channels)


def _summary(problems: list[Problem]) -> str:
    n = len(problems)
    first = problems[0]
    more = f" (and {n - 1} more)" if n > 1 else ""
    return f"invalid system file: {first.path or 'document'}: {first.msg}{more}"


def resolve_paths(spec: ServiceSpec, base_dir: str) -> ServiceSpec:
    """Make a process service's relative ``cwd`` absolute against the system file's directory."""
    if isinstance(spec.config, ProcessConfig):
        cwd = spec.config.cwd
        resolved = os.path.normpath(os.path.join(base_dir, cwd)) if cwd and not os.path.isabs(cwd) else cwd
        if cwd is None:
            resolved = base_dir
        if resolved != cwd:
            config = spec.config.model_copy(update={"cwd": resolved})
            return spec.model_copy(update={"config": config})
    return spec


def keep_recorded_cwd(spec: ServiceSpec, stored: ServiceSpec) -> ServiceSpec:
    """``spec`` with the stored working directory when it names none itself.

    `windflow apply` and `windflow up` resolve a process service's missing ``cwd`` to the system file's directory;
    a REST ``PUT /system`` of the same file has no directory to resolve against. Without this, applying one
    unchanged file both ways would save a new version each time."""
    if (
        isinstance(spec.config, ProcessConfig)
        and spec.config.cwd is None
        and isinstance(stored.config, ProcessConfig)
        and stored.config.cwd is not None
    ):
        return spec.model_copy(update={"config": spec.config.model_copy(update={"cwd": stored.config.cwd})})
    return spec


def dump_system(specs: Iterable[ServiceSpec], *, notifications: NotificationsSection | None = None) -> dict[str, Any]:
    """The registry as a system document that re-applies to the same state."""
    document: dict[str, Any] = {
        "version": SYSTEM_FILE_VERSION,
        "services": {s.id: s.content() for s in sorted(specs, key=lambda s: s.id)},
    }
    if notifications is not None:
        document["notifications"] = notifications.model_dump(mode="json")
    return document


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)
