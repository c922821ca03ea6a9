"""One settings object for every process (API, worker, CLI, `windflow up`).

Read from ``WINDFLOW_*`` environment variables, an optional ``.env`` and an optional ``windflow.toml``
(``WINDFLOW_CONFIG_FILE`` names another). Only composition roots call :func:`load_settings`; everything
else receives the object.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from windflow.domain.notifications import ChannelConfig

MIN_JWT_SECRET_BYTES = 32


class Mode(StrEnum):
    EMBEDDED = "embedded"
    PRODUCTION = "production"


class SettingsError(Exception):
    """Invalid settings: the message names each offending environment variable."""


def _toml_file() -> Path:
    return Path(os.environ.get("WINDFLOW_CONFIG_FILE", "windflow.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WINDFLOW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    mode: Mode = Field(Mode.EMBEDDED, description="embedded (one machine, generated secrets) or production")
    data_dir: Path = Field(Path(".windflow"), description="State of this instance: database, logs, pid files")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite+aiosqlite in the data dir. postgres:// is accepted"
    )
    redis_url: str | None = Field(None, description="Redis for events and caches; unset = in-process bus")
    events_stream: str = Field(
        "windflow:events",
        min_length=1,
        max_length=200,
        description="Redis stream of all events (prefix it per deployment or test)",
    )
    events_maxlen: int = Field(
        100_000,
        ge=100,
        description="Events the Redis stream retains, approximately "
        "(XADD MAXLEN ~; the in-process bus keeps at most 10,000); a client resumes by "
        "id within this window",
    )
    logs_prefix: str = Field(
        "windflow:logs:",
        min_length=1,
        max_length=200,
        description="Redis key prefix of the service log streams workers ship to "
        "(one stream per service, plus '{prefix}offsets')",
    )
    logs_maxlen: int = Field(
        5000,
        ge=100,
        le=1_000_000,
        description="Log lines kept per service in Redis, "
        "approximately (the files on the worker's host keep more: log_max_bytes)",
    )
    logs_ship: bool = Field(
        True,
        description="With redis_url: workers ship their services' stdout/stderr to "
        "Redis, so the API, CLI and dashboard on any host can tail and follow them",
    )
    events_relay_interval: float = Field(
        0.25,
        gt=0,
        le=30,
        description="Outbox relay poll interval, seconds (local commits and PostgreSQL NOTIFY wake it sooner)",
    )
    events_claim_idle: float = Field(
        30.0,
        gt=0,
        description="Seconds an event delivered to a consumer group "
        "member stays unacknowledged before another member reclaims it",
    )
    events_max_deliveries: int = Field(
        5, ge=1, description="Deliveries of one event to a consumer group before it moves to the dead-letter stream"
    )
    events_metrics_interval: float = Field(
        10.0,
        ge=0,
        description="Seconds between METRICS_UPDATE rounds "
        "(per-service health, latency, restarts, availability); 0 = off",
    )
    ws_queue_size: int = Field(
        1000,
        ge=1,
        description="Events buffered per WebSocket client; a client that "
        "falls further behind is told so and disconnected (it resumes by id)",
    )
    ws_heartbeat: float = Field(15.0, gt=0, description="Seconds between server ping messages on WebSockets")
    ws_send_timeout: float = Field(
        10.0, gt=0, description="Seconds one WebSocket send may block before the client is dropped as unresponsive"
    )
    ws_revalidate_interval: float = Field(
        2.0,
        ge=0.2,
        le=60,
        description="Seconds between re-checks of the "
        "token of an open WebSocket or followed log: a logout, password change, "
        "role change, disabled account or revoked API token ends it this soon",
    )
    ws_auth_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a WebSocket client without a token in the URL or headers has to send its auth message",
    )
    temporal_address: str = Field("127.0.0.1:7233", description="host:port of the Temporal frontend")
    temporal_namespace: str = Field("default", description="Temporal namespace")
    temporal_profile: str | None = Field(
        None,
        description="Profile of the Temporal client config file "
        "(TEMPORAL_CONFIG_FILE, else ~/.config/temporalio/temporal.toml) to "
        "connect with; TEMPORAL_* variables (TEMPORAL_ADDRESS, TEMPORAL_API_KEY, "
        "TEMPORAL_TLS_*) apply too. WINDFLOW_TEMPORAL_* settings win over both",
    )
    temporal_tls: bool | None = Field(
        None,
        description="Connect to Temporal over TLS; unset = TLS when a CA, "
        "client certificate, server name or API key is set",
    )
    temporal_tls_ca: Path | None = Field(
        None,
        description="PEM file of the CA that signed the Temporal frontend's certificate (unset = the system's roots)",
    )
    temporal_tls_cert: Path | None = Field(None, description="PEM client certificate for mTLS to Temporal")
    temporal_tls_key: Path | None = Field(None, description="PEM private key of temporal_tls_cert")
    temporal_tls_server_name: str | None = Field(
        None,
        description="Name to expect in the Temporal frontend's "
        "certificate, and SNI (when it differs from the address' host)",
    )
    temporal_api_key: SecretStr | None = Field(
        None, description="API key for Temporal (Temporal Cloud); sent as a bearer token, implies TLS"
    )
    task_queue: str = Field("windflow", description="Temporal task queue shared by all workers")
    temporal_port: int = Field(7233, ge=1, le=65535, description="Port of the dev server `windflow up` starts")
    temporal_ui_port: int = Field(8233, ge=0, le=65535, description="Temporal Web UI port for `windflow up`; 0 = none")
    api_host: str = Field("127.0.0.1", description="Address the API binds")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the API binds")
    public_url: str | None = Field(None, description="Base URL of the API as users reach it (links in responses)")
    temporal_ui_url: str | None = Field(None, description="Base URL of the Temporal Web UI (links to runs)")
    dashboard_dir: Path | None = Field(
        None,
        description="Built web dashboard served at / (index.html and "
        "assets); default: web/dist of the source checkout, else the build "
        "shipped in the package",
    )
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 key (>= 32 bytes). Embedded: generated in the data dir when unset"
    )
    access_token_ttl: int = Field(900, ge=30, description="Access token lifetime, seconds")
    refresh_token_ttl: int = Field(14 * 86400, ge=60, description="Refresh token lifetime, seconds")
    bootstrap_admin_user: str = Field("admin", description="First admin's user name")
    bootstrap_admin_password: SecretStr | None = Field(None, description="First admin's password (unattended)")
    api_token_ttl_days: int = Field(
        90, ge=1, le=3650, description="Lifetime of a personal API token created without expires_in_days"
    )
    api_token_max_ttl_days: int = Field(
        365, ge=1, le=3650, description="Longest lifetime a personal API token may be given"
    )
    login_attempts_per_user: int = Field(
        10,
        ge=1,
        description="Login attempts for one user name from one client "
        "address per login window (another address is counted apart, so nobody "
        "can lock a user out)",
    )
    login_attempts_per_address: int = Field(30, ge=1, description="Login attempts per client address per window")
    login_window: int = Field(60, ge=1, description="Login rate-limit sliding window, seconds")
    login_free_failures: int = Field(
        3,
        ge=1,
        le=100,
        description="Wrong passwords for one user from one address "
        "that cost nothing; each further one delays the next attempt (1 s, 2 s, "
        "4 s, ...)",
    )
    login_delay_max: int = Field(300, ge=1, le=86400, description="Longest delay after wrong passwords, seconds")
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Proxies (IPs or CIDRs, comma-separated; '*' for any) whose X-Forwarded-For / -Proto are "
        "believed. Default none: the client address is the TCP peer's, whatever headers say",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field("INFO", description="Log level")
    log_format: Literal["auto", "json", "console"] = Field("auto", description="auto: console on a TTY, else json")
    probe_history: int = Field(1000, ge=10, le=100_000, description="Probe results kept per service")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body the API accepts")
    read_cache: bool = Field(
        True,
        description="Cache the service list pages (Redis when redis_url is set, else "
        "in-process); entries are keyed by the store's change stamp, so no read is stale",
    )
    read_cache_ttl: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a cached page is kept (bounds memory; freshness does not depend on it)",
    )
    worker_host: str | None = Field(None, description="Host name of this worker (host-affine services)")
    sweep_interval: float = Field(300.0, ge=10, description="Seconds between recovery sweeps (Temporal Schedule)")
    notification_channels: list[ChannelConfig] = Field(
        default_factory=list,
        description="Escalation channels besides the system file's, as a JSON list, e.g. "
        '[{"name": "ops", "kind": "slack", "url": "https://hooks.slack.com/services/..."}, '
        '{"name": "log", "kind": "log"}]; a channel of the same name in the system file is ignored',
    )
    restart_max_in_flight: int = Field(
        5,
        ge=1,
        description="Restarts in progress at once across all services "
        "(global restart budget); further recoveries wait their turn",
    )
    restart_max_per_window: int = Field(
        30, ge=1, description="Restarts started within restart_window across all services (global restart budget)"
    )
    restart_window: float = Field(60.0, gt=0, le=86400, description="Sliding window of restart_max_per_window, seconds")
    codec_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Payload encryption keys as JSON {key_id: base64 32-byte key}; set = every payload in "
        "Temporal's history is AES-GCM encrypted. Keep retired keys here while histories still use them",
    )
    codec_key_id: str | None = Field(
        None,
        description="Id (in codec_keys) of the key that encrypts new payloads; "
        "may be left unset when codec_keys holds a single key",
    )
    codec_disabled: bool = Field(
        False,
        description="Opt out of payload encryption when codec_keys is empty: Temporal's history then holds "
        "configs and secrets in clear. Otherwise embedded mode generates a key in the data dir (codec_key, 0600) "
        "and production mode requires codec_keys",
    )
    codec_auth_token: SecretStr | None = Field(
        None,
        min_length=32,
        description="Token of the Temporal Web UI's codec endpoint: the UI calls "
        "<api>/api/v1/codec/ui/<token>/decode without a windflow login (unset: no such endpoint). At least 32 "
        "characters; whoever has it (the UI's users) can decode payloads",
    )
    codec_cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins (JSON list) allowed to call /api/v1/codec/* from a browser: the Temporal Web UI; "
        "empty (the default) = the origin of the Temporal UI address windflow links to",
    )
    worker_metrics_port: str = Field(
        "9464-9473",
        description="`windflow worker`: port of its Prometheus "
        "endpoint (/metrics: windflow's worker-side metrics and the Temporal SDK's); "
        "a range = the first free port of it (several workers per host), one port, "
        "0 = any free port, off = none",
    )
    worker_metrics_host: str = Field(
        "127.0.0.1", description="Address the worker's metrics endpoint binds (0.0.0.0 in containers)"
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="When set, /metrics (API and worker) wants "
        "`Authorization: Bearer <token>` (Prometheus: `authorization:` in "
        "the scrape config)",
    )
    webhooks_dispatch: bool = Field(
        True,
        description="Run the outgoing-webhook dispatcher in this API process "
        "(several processes may run it: deliveries are claimed safely in the store)",
    )
    webhooks_timeout: float = Field(
        10.0, gt=0, le=300, description="Seconds one webhook delivery attempt may take (connect, send, answer)"
    )
    webhooks_max_attempts: int = Field(
        8, ge=1, le=100, description="Attempts per webhook delivery before it is marked failed"
    )
    webhooks_backoff: float = Field(
        5.0,
        gt=0,
        description="Seconds before the first retry of a webhook delivery; "
        "each further retry waits twice as long, up to webhooks_backoff_max",
    )
    webhooks_backoff_max: float = Field(
        3600.0, gt=0, description="Longest wait between webhook delivery attempts, seconds"
    )
    webhooks_concurrency: int = Field(8, ge=1, le=256, description="Webhook deliveries one dispatcher sends at once")
    webhooks_poll_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds between looks for due webhook deliveries queued by other processes"
    )
    webhooks_retention_days: float = Field(
        14.0, gt=0, description="Days finished webhook deliveries stay in the delivery log"
    )
    status_history_retention_days: float = Field(
        30.0,
        gt=0,
        description="Days each service's status changes (its "
        "state timeline) are kept; the newest change of a service stays",
    )
    hooks_rate_limit: int = Field(
        120,
        ge=1,
        description="Deliveries one incoming alert hook may make per "
        "hooks_rate_window; more are answered 429 with Retry-After",
    )
    hooks_rate_window: float = Field(60.0, gt=0, le=86400, description="Window of hooks_rate_limit, seconds")
    outbound_deny: list[str] = Field(
        default_factory=list,
        description="CIDRs and host names (JSON list; `*.example.com` for subdomains) that probes, the http driver, "
        "webhooks and notification channels must never reach, on top of the built-in link-local and cloud "
        "metadata addresses",
    )
    outbound_allow: list[str] = Field(
        default_factory=list,
        description="CIDRs and host names (JSON list) they may reach even where the defaults refuse (a private "
        "receiver for webhooks, a service on a link-local address); outbound_deny still wins",
    )
    outbound_private_services: bool = Field(
        True,
        description="HTTP probes and the http driver may reach loopback and private addresses (watching "
        "local services is their job)",
    )
    outbound_private_notify: bool = Field(
        False,
        description="Outgoing webhooks and notification channels may reach loopback and private "
        "addresses; off by default, so a subscription cannot be pointed at internal services",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_toml_file())
        return init_settings, env_settings, dotenv_settings, toml, file_secret_settings

    @field_validator("outbound_deny", "outbound_allow")
    @classmethod
    def _outbound_entries(cls, value: list[str]) -> list[str]:
        from windflow.outbound import parse_entries

        parse_entries(value)  # raises ValueError naming a bad entry
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value[len("sqlite:///") :]
        allowed = ("postgresql+psycopg://", "sqlite+aiosqlite://")
        if not value.startswith(allowed):
            raise ValueError("must start with postgresql:// (psycopg 3) or sqlite:/// (aiosqlite)")
        return value

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _forwarded_allow_ips(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            import ipaddress

            for item in value:
                if item != "*":
                    try:
                        ipaddress.ip_network(str(item), strict=False)
                    except ValueError:
                        raise ValueError(f"forwarded_allow_ips: {item!r} is not an IP address or network") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("worker_host")
    @classmethod
    def _worker_host(cls, value: str | None) -> str | None:
        from windflow.domain.models import is_host_name

        if value in (None, ""):
            return None
        if not is_host_name(value):
            raise ValueError("must be a host name: lower-case letters, digits and inner '-', labels separated by '.'")
        return value

    @field_validator("worker_metrics_port", mode="before")
    @classmethod
    def _metrics_port(cls, value: Any) -> str:
        from windflow.metrics import parse_port_spec

        text = str(value).strip()
        parse_port_spec(text)  # ValueError names what is accepted
        return text

    @field_validator("temporal_address")
    @classmethod
    def _address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:7233")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_len(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_JWT_SECRET_BYTES} bytes")
        return value

    @field_validator("codec_keys")
    @classmethod
    def _codec_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        from windflow.codec import decode_key

        for key_id, key in value.items():
            if not key_id:
                raise ValueError("key ids must not be empty")
            try:
                decode_key(key.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"key {key_id!r} {exc}") from None
        return value

    @model_validator(mode="after")
    def _codec_key_id(self) -> Settings:
        if self.codec_key_id is not None and self.codec_key_id not in self.codec_keys:
            raise ValueError(f"WINDFLOW_CODEC_KEY_ID {self.codec_key_id!r} is not a key id in WINDFLOW_CODEC_KEYS")
        if self.codec_key_id is None and len(self.codec_keys) > 1:
            raise ValueError(
                "WINDFLOW_CODEC_KEY_ID must name the encrypting key when WINDFLOW_CODEC_KEYS holds several keys"
            )
        return self

    @model_validator(mode="after")
    def _temporal_tls_files(self) -> Settings:
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            raise ValueError("WINDFLOW_TEMPORAL_TLS_CERT and WINDFLOW_TEMPORAL_TLS_KEY go together (mTLS needs both)")
        for name in ("temporal_tls_ca", "temporal_tls_cert", "temporal_tls_key"):
            path = getattr(self, name)
            if path is not None and not path.expanduser().is_file():
                raise ValueError(f"WINDFLOW_{name.upper()}: no such file: {path}")
        if self.temporal_tls is False and (self.temporal_tls_ca or self.temporal_tls_cert or self.temporal_api_key):
            raise ValueError("WINDFLOW_TEMPORAL_TLS=false contradicts the TLS certificate / API key settings")
        return self

    @model_validator(mode="after")
    def _production_needs(self) -> Settings:
        if self.mode == Mode.PRODUCTION:
            if self.jwt_secret is None:
                raise ValueError("WINDFLOW_JWT_SECRET is required when WINDFLOW_MODE=production")
            if self.database_url is None:
                raise ValueError("WINDFLOW_DATABASE_URL is required when WINDFLOW_MODE=production")
            if not self.codec_keys and not self.codec_disabled:
                raise ValueError(
                    "WINDFLOW_CODEC_KEYS is required when WINDFLOW_MODE=production (Temporal's history "
                    "holds configs and their secrets); to keep it in clear on purpose, set "
                    "WINDFLOW_CODEC_DISABLED=true"
                )
        return self

    # ----------------------------------------------------------------- derived values

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.resolved_data_dir / 'windflow.db'}"

    @property
    def api_base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def temporal_ui_base_url(self) -> str | None:
        if self.temporal_ui_url:
            return self.temporal_ui_url.rstrip("/")
        if self.mode == Mode.EMBEDDED and self.temporal_ui_port:
            return f"http://127.0.0.1:{self.temporal_ui_port}"
        return None

    @property
    def codec_origins(self) -> list[str]:
        """Browser origins allowed on the codec endpoint: configured, else the Temporal UI's own origin."""
        if self.codec_cors_origins:
            return list(self.codec_cors_origins)
        from urllib.parse import urlsplit

        base = self.temporal_ui_base_url
        if not base:
            return []
        parts = urlsplit(base)
        return [f"{parts.scheme}://{parts.netloc}"]

    def jwt_key(self) -> str:
        """The signing key: configured, or generated once and kept in the data dir (embedded mode only)."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        path = self.resolved_data_dir / "jwt_secret"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key

    def codec_key_map(self) -> tuple[dict[str, str], str | None]:
        """The payload codec's base64 keys and encrypting key id: configured, else (unless ``codec_disabled``)
        one generated once in the data dir, like the JWT secret: ``({}, None)`` means no encryption."""
        if self.codec_keys:
            return {kid: key.get_secret_value() for kid, key in self.codec_keys.items()}, self.codec_key_id
        if self.codec_disabled:
            return {}, None
        path = self.ensure_data_dir() / GENERATED_CODEC_KEY_FILE
        if not path.exists():
            from windflow.codec import new_key

            with contextlib.suppress(FileExistsError):  # another process of this instance made it meanwhile
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(new_key())
        return {GENERATED_CODEC_KEY_ID: path.read_text().strip()}, GENERATED_CODEC_KEY_ID

    def ensure_data_dir(self) -> Path:
        """The data dir, private to this user (0700): it holds the store, keys, logs and Temporal's database."""
        path = self.resolved_data_dir
        if not path.exists():
            path.mkdir(parents=True, mode=0o700, exist_ok=True)
        if _own_data_dir(path):
            private(path, 0o700)
        return path


#: files that make a directory recognisably windflow's data dir (only such a directory, or an empty one, is
#: tightened: a data dir pointed at a shared directory such as /tmp must not lock everyone else out of it)
_DATA_DIR_MARKERS = ("windflow.db", "jwt_secret", "codec_key", "temporal.db")


def _own_data_dir(path: Path) -> bool:
    try:
        if path.stat().st_mode & 0o1000 or path == Path(path.anchor) or path == Path.home():
            return False  # sticky (shared, like /tmp), the root, or a home directory
        return not any(path.iterdir()) or any((path / name).exists() for name in _DATA_DIR_MARKERS)
    except OSError:
        return False


GENERATED_CODEC_KEY_FILE = "codec_key"
GENERATED_CODEC_KEY_ID = "local"


def private(path: Path, mode: int = 0o600) -> None:
    """Take group and other permissions off ``path`` (ours only; a file owned by someone else is left alone)."""
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            path.chmod(mode)


def with_temporal_profile(settings: Settings) -> Settings:
    """The Temporal address and namespace of the Temporal client profile (TEMPORAL_* variables, the config
    file) where WINDFLOW_TEMPORAL_ADDRESS / _NAMESPACE do not set them."""
    from temporalio.envconfig import ClientConfigProfile

    try:
        profile = ClientConfigProfile.load(profile=settings.temporal_profile)
    except Exception as exc:  # a malformed config file, an unknown profile
        raise SettingsError(f"invalid settings: Temporal client profile: {exc}") from None
    update: dict[str, Any] = {}
    if profile.address and "temporal_address" not in settings.model_fields_set:
        update["temporal_address"] = profile.address
    if profile.namespace and "temporal_namespace" not in settings.model_fields_set:
        update["temporal_namespace"] = profile.namespace
    return settings.model_copy(update=update) if update else settings


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning a validation error into one message that names each variable."""
    try:
        return with_temporal_profile(Settings(**overrides))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            name = "WINDFLOW_" + loc[0].upper() if loc else "settings"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{name}: {msg}" if loc else msg)
        raise SettingsError("invalid settings: " + "; ".join(lines)) from None
