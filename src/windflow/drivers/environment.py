"""What a managed process sees: a clean environment and, optionally, another user.

A command windflow runs (a ``process`` service, a ``command``-driver script, an ``exec`` probe) never inherits
the worker's environment: the worker holds the JWT secret, database URLs and codec keys. The child gets

* a minimal base: ``PATH`` (:data:`DEFAULT_PATH`), ``LANG`` (the worker's, else ``C.UTF-8``) and ``HOME`` (the
  home of the user it runs as);
* the worker variables the service names in ``inherit_env`` (an allow-list of names; absent ones are skipped);
* the ``env_file`` (dotenv syntax, read at each start, like systemd's ``EnvironmentFile=``);
* the service's own ``env`` (which wins over everything above).

``user`` / ``group`` work like systemd's ``User=``/``Group=`` and supervisord's ``user=``: a worker running as
root drops to that user (its groups included) in the child before the exec; a worker that is not root and is
asked to become someone else refuses to start the service instead of running it as itself.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from windflow.domain.errors import DriverFailed

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the child runs as: ``uid``, ``gid`` and ``extra_groups`` are ``Popen``'s ``user``, ``group`` and
    ``extra_groups`` (None when the child runs as the worker itself)."""

    home: str
    name: str | None = None
    uid: int | None = None
    gid: int | None = None
    extra_groups: list[int] | None = None


def _user_entry(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise DriverFailed(f"user {user!r} does not exist on this host", details={"user": user}) from None


def _group_id(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise DriverFailed(f"group {group!r} does not exist on this host", details={"group": group}) from None


def identity(user: str | None, group: str | None) -> Identity:
    """Resolve ``user``/``group``; raise :class:`DriverFailed` when this worker cannot become them."""
    euid = os.geteuid()
    if user is None and group is None:
        try:
            home = pwd.getpwuid(euid).pw_dir
        except KeyError:
            home = "/"
        return Identity(home=home)
    entry = _user_entry(user) if user is not None else pwd.getpwuid(euid)
    gid = _group_id(group) if group is not None else entry.pw_gid
    if euid != 0:
        if entry.pw_uid != euid or gid not in (os.getegid(), *os.getgroups()):
            raise DriverFailed(
                f"the worker runs as uid {euid}, not root: it cannot run this service as "
                f"user {user or entry.pw_name!r}"
                + (f" group {group!r}" if group else "")
                + " (run the worker as root to switch users, or drop `user`/`group`)",
                details={"user": user, "group": group, "worker_uid": euid},
            )
        return Identity(home=entry.pw_dir, name=entry.pw_name)
    extra = os.getgrouplist(entry.pw_name, gid) if user is not None else [gid]
    return Identity(home=entry.pw_dir, name=entry.pw_name, uid=entry.pw_uid, gid=gid, extra_groups=extra)


def read_env_file(path: str, cwd: str | None = None) -> dict[str, str]:
    """Variables of a dotenv file (``KEY=value`` lines, ``#`` comments, quotes); keys without a value are
    skipped. A relative path resolves against ``cwd``."""
    full = Path(path) if os.path.isabs(path) or cwd is None else Path(cwd) / path
    if not full.is_file():
        raise DriverFailed(f"env_file {str(full)!r} does not exist or is not a file", details={"env_file": str(full)})
    try:
        values = dotenv_values(full, interpolate=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise DriverFailed(f"cannot read env_file {str(full)!r}: {exc}", details={"env_file": str(full)}) from None
    return {k: v for k, v in values.items() if v is not None}


def clean_env(
    *,
    extra: dict[str, str],
    inherit: Iterable[str] = (),
    env_file: str | None = None,
    cwd: str | None = None,
    home: str | None = None,
) -> dict[str, str]:
    """The child's whole environment: base, allowed worker variables, the env file, then ``extra``."""
    env = {"PATH": DEFAULT_PATH, "LANG": os.environ.get("LANG") or "C.UTF-8", "HOME": home or "/"}
    for name in inherit:
        if name in os.environ:
            env[name] = os.environ[name]
    if env_file:
        env.update(read_env_file(env_file, cwd))
    env.update(extra)
    return env
