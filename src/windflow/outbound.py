"""Where windflow's own outbound requests may go: HTTP probes, the http driver, notification channels and
outgoing webhooks all ask one :class:`OutboundPolicy` before they connect.

Every address a request would reach is checked, in this order:

1. ``outbound_deny`` (settings: CIDRs and host names) refuses;
2. ``outbound_allow`` permits (a name on it is not resolved-and-checked further);
3. built in, always refused: link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10,
   fd00:ec2::254, 100.100.100.200), "this network" (0.0.0.0/8, ::), multicast and broadcast, and the metadata
   host names (``metadata.google.internal``, ``metadata``, ``instance-data``, ...);
4. loopback and private ranges: allowed for probes and the http driver (watching local services is the
   point; ``outbound_private_services``), refused for webhooks and channels unless
   ``outbound_private_notify`` is set.

IPv4 written in decimal, hex, octal or short form (``2130706433``, ``0x7f000001``, ``0177.1``, ``127.1``) is
read the way the C resolver reads it, and IPv4 embedded in IPv6 (``::ffff:169.254.169.254``, NAT64
``64:ff9b::``, 6to4) is checked as the IPv4 address it reaches. A configuration is checked when it is saved (a
422 for what is refused whatever DNS says) and again at connect time, after resolving the name, against every
address it resolves to; the connection then goes to the address that was checked, so a name that resolves
differently a second later (DNS rebinding) cannot slip through. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BUILTIN_DENY_NETS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local, the AWS/GCP/Azure/OpenStack metadata address 169.254.169.254
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "0.0.0.0/8",
        "::/128",  # "this host": reaches local services on many systems
        "224.0.0.0/4",
        "ff00::/8",
        "255.255.255.255/32",  # multicast, broadcast
    )
)
BUILTIN_DENY_NAMES: frozenset[str] = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_LOOSE = re.compile(r"^[0-9a-fA-FxX.]+$")


class OutboundRefused(OSError):
    """The outbound policy refuses this destination (an ``OSError``: callers treat it as "cannot connect")."""


def _name(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def literal_ip(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one, in any spelling the C resolver accepts; else None."""
    text = _name(host)
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    if _IPV4_LOOSE.match(text) and not text.endswith("."):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))  # 2130706433, 0x7f.1, 0177.0.0.1, 127.1
        except OSError:
            return None
    return None


def _embedded(ip: IPAddress) -> list[IPAddress]:
    """``ip`` and the IPv4 address an IPv6 one leads to (mapped, NAT64, 6to4)."""
    out: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            out.append(ip.ipv4_mapped)
        if ip in _NAT64:
            out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            out.append(ip.sixtofour)
    return out


def parse_entries(entries: Iterable[str]) -> tuple[tuple[IPNetwork, ...], frozenset[str]]:
    """Split allow/deny entries into networks (a CIDR or an address) and host names (``*.example.com`` and
    ``.example.com`` match the subdomains). Raises ValueError for an entry that is neither."""
    nets: list[IPNetwork] = []
    names: set[str] = set()
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        name = _name(entry)
        if name.startswith("*."):
            name = name[1:]
        label = name.lstrip(".")
        if not label or not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*", label):
            raise ValueError(f"{raw!r} is neither a CIDR, an IP address nor a host name")
        names.add(name)
    return tuple(nets), frozenset(names)


def _name_matches(name: str, names: frozenset[str]) -> bool:
    if name in names:
        return True
    return any(n.startswith(".") and name.endswith(n) for n in names)


@dataclass(frozen=True)
class OutboundPolicy:
    """What one kind of outbound request may reach. Build one per purpose from the settings with
    :meth:`for_services` / :meth:`for_notify`; the defaults are the documented ones."""

    purpose: str = "probes and the http driver"
    allow_private: bool = True
    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    private_setting: str = "outbound_private_services"
    _deny_nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _deny_names: frozenset[str] = field(init=False, repr=False, compare=False)
    _allow_nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _allow_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        deny_nets, deny_names = parse_entries(self.deny)
        allow_nets, allow_names = parse_entries(self.allow)
        object.__setattr__(self, "_deny_nets", deny_nets)
        object.__setattr__(self, "_deny_names", deny_names)
        object.__setattr__(self, "_allow_nets", allow_nets)
        object.__setattr__(self, "_allow_names", allow_names)

    @classmethod
    def for_services(cls, settings: Any) -> OutboundPolicy:
        """HTTP probes and the http driver: loopback and private ranges allowed unless the settings say no."""
        return cls(
            purpose="probes and the http driver",
            allow_private=settings.outbound_private_services,
            deny=tuple(settings.outbound_deny),
            allow=tuple(settings.outbound_allow),
        )

    @classmethod
    def for_notify(cls, settings: Any) -> OutboundPolicy:
        """Outgoing webhooks and notification channels: loopback and private ranges refused unless allowed."""
        return cls(
            purpose="webhooks and notification channels",
            allow_private=settings.outbound_private_notify,
            deny=tuple(settings.outbound_deny),
            allow=tuple(settings.outbound_allow),
            private_setting="outbound_private_notify",
        )

    @classmethod
    def notify_default(cls) -> OutboundPolicy:
        return cls(
            purpose="webhooks and notification channels", allow_private=False, private_setting="outbound_private_notify"
        )

    # ------------------------------------------------------------------ checks

    def refuse_address(self, ip: IPAddress) -> str | None:
        """Why ``ip`` is refused, or None."""
        cands = _embedded(ip)

        def within(nets: tuple[IPNetwork, ...]) -> bool:
            return any(c in net for c in cands for net in nets if net.version == c.version)

        if within(self._deny_nets):
            return f"{ip} is in outbound_deny"
        if within(self._allow_nets):
            return None
        if within(BUILTIN_DENY_NETS):
            return f"{ip} is a link-local, metadata or broadcast address"
        if not self.allow_private:
            for cand in cands:
                if cand.is_loopback or not cand.is_global:
                    kind = "loopback" if cand.is_loopback else "private"
                    return (
                        f"{ip} is a {kind} address, not allowed for {self.purpose} (see outbound_allow and "
                        f"{self.private_setting})"
                    )
        return None

    def _name_allowed(self, name: str) -> bool:
        return _name_matches(name, self._allow_names)

    def refuse_host(self, host: str) -> str | None:
        """Why ``host`` is refused without resolving it (names on the lists, literal addresses), or None."""
        name = _name(host)
        if not name:
            return "no host"
        if _name_matches(name, self._deny_names):
            return f"{name} is in outbound_deny"
        if self._name_allowed(name):
            return None
        ip = literal_ip(name)
        if ip is not None:
            return self.refuse_address(ip)
        if name in BUILTIN_DENY_NAMES:
            return f"{name} is a cloud metadata host"
        if (name == "localhost" or name.endswith(".localhost")) and not self.allow_private:
            return f"{name} is a loopback name, not allowed for {self.purpose}"
        return None

    def refuse_url(self, url: str) -> str | None:
        """Why a request to ``url`` is refused before any DNS lookup, or None."""
        try:
            host = urlsplit(url.strip()).hostname
        except ValueError:
            return "not a URL"
        return self.refuse_host(host or "")

    def check_url(self, url: str) -> None:
        reason = self.refuse_url(url)
        if reason:
            raise OutboundRefused(f"refused by the outbound policy: {reason}")

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """(family, address) pairs to connect to for ``host``: each one checked (raises
        :class:`OutboundRefused` if any address the name resolves to is refused)."""
        reason = self.refuse_host(host)
        if reason:
            raise OutboundRefused(f"refused by the outbound policy: {reason}")
        name = _name(host)
        ip = literal_ip(name)
        if ip is not None:
            return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, str(ip))]
        infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
        out: list[tuple[int, str]] = []
        for family, _, _, _, sockaddr in infos:
            address = str(sockaddr[0])
            if not self._name_allowed(name):
                reason = self.refuse_address(ipaddress.ip_address(address.split("%", 1)[0]))
                if reason:
                    raise OutboundRefused(f"refused by the outbound policy: {name} resolves to {reason}")
            if (family, address) not in out:
                out.append((family, address))
        if not out:
            raise OutboundRefused(f"cannot resolve {name!r}")
        return out


# --------------------------------------------------------------------------- httpx2 transports

if TYPE_CHECKING:
    from httpcore2 import AsyncNetworkBackend
else:
    AsyncNetworkBackend = object  # httpcore2 is imported when a client is built, not with this module (0.2 s)


class GuardedBackend(AsyncNetworkBackend):
    """An httpcore2 network backend that connects only to addresses the policy allows, and to exactly the
    address it checked (TLS still verifies the certificate against the URL's host name)."""

    def __init__(self, policy: OutboundPolicy, inner: Any = None) -> None:
        import httpcore2

        self.policy = policy
        self.inner = inner if inner is not None else httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> Any:
        last: BaseException | None = None
        for _, address in await self.policy.resolve(host, port):
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except Exception as exc:  # try the next address, like the resolver-aware default
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,  # noqa: ARG002
        timeout: float | None = None,  # noqa: ARG002
        socket_options: Any = None,  # noqa: ARG002
    ) -> Any:
        raise OutboundRefused("unix sockets are not outbound destinations")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_client(policy: OutboundPolicy, **kwargs: Any) -> Any:
    """An ``httpx2.AsyncClient`` whose connections go through :class:`GuardedBackend`: redirects are not
    followed and proxy settings from the environment are ignored (a proxy would connect for us, unchecked)."""
    import httpx2

    transport_kwargs = {k: kwargs.pop(k) for k in ("verify", "limits") if k in kwargs}
    transport = httpx2.AsyncHTTPTransport(trust_env=False, **transport_kwargs)
    transport._pool._network_backend = GuardedBackend(policy)  # httpcore2's documented option
    return httpx2.AsyncClient(transport=transport, follow_redirects=False, trust_env=False, **kwargs)


# --------------------------------------------------------------------------- checks of saved configs


@dataclass(frozen=True)
class Outbound:
    """The two policies of a process: services (probes, http driver) and notify (webhooks, channels)."""

    services: OutboundPolicy
    notify: OutboundPolicy

    @classmethod
    def from_settings(cls, settings: Any) -> Outbound:
        return cls(services=OutboundPolicy.for_services(settings), notify=OutboundPolicy.for_notify(settings))


_CHECKED_SCHEMES = ("http://", "https://", "redis://", "rediss://")


def url_problems(
    value: Any, policy: OutboundPolicy, loc: list[str | int] | None = None
) -> list[tuple[list[str | int], str]]:
    """Every ``url`` (http, https, redis) and TCP probe ``host`` in a JSON-like config that the policy refuses
    before any DNS lookup, with its location: what is refused whatever a name resolves to (metadata hosts,
    refused literal addresses)."""
    out: list[tuple[list[str | int], str]] = []
    stack: list[tuple[Any, list[str | int]]] = [(value, list(loc or []))]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if key == "url" and isinstance(sub, str) and sub.lower().startswith(_CHECKED_SCHEMES):
                    reason = policy.refuse_url(sub)
                    if reason:
                        out.append(([*where, key], f"refused by the outbound policy: {reason}"))
                elif key == "host" and isinstance(sub, str) and item.get("kind") == "tcp":
                    reason = policy.refuse_host(sub)
                    if reason:
                        out.append(([*where, key], f"refused by the outbound policy: {reason}"))
                else:
                    stack.append((sub, [*where, key]))
        elif isinstance(item, list):
            stack.extend((sub, [*where, i]) for i, sub in enumerate(item))
    return sorted(out, key=lambda p: [str(x) for x in p[0]])
