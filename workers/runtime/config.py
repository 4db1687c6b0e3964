"""Configuration from environment variables (``APPSVC_DR_<SECTION>__<FIELD>``) and an optional TOML file.

Secrets are ``SecretStr``: they print as ``**********`` in reprs, logs and ``config check`` output.
"""
from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, TomlConfigSettingsSource

from contracts.events.backup import ALL_COMPONENTS, Component

from workers.engines.settings import DatabaseSettings
from workers.fileshare.settings import FileshareSettings
from workers.runtime.errors import ConfigurationError
from workers.runtime.section import Section

CONFIG_FILE_ENV = "APPSVC_DR_CONFIG_FILE"


class BrokerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=5672, ge=1, le=65535)
    vhost: str = "/"
    username: str = "guest"
    password: SecretStr = SecretStr("guest")
    heartbeat: int = Field(default=60, ge=0, description="AMQP heartbeat in seconds")
    exchange: str = Field(default="appsvc-dr", min_length=1)
    queue_prefix: str = Field(default="appsvc-dr", min_length=1)
    connect_attempts: int = Field(default=0, ge=0, description="0 = retry forever (with backoff)")


class RetrySettings(Section):
    backoff: list[float] = Field(default=[30.0, 120.0, 600.0, 3600.0], min_length=1,
                                 description="Seconds to wait before each retry of a transient failure")
    crash_limit: int = Field(default=5, ge=1, description="Deliveries without an outcome (worker crashed) "
                                                          "before the runtime dead-letters the message")
    delivery_limit: int = Field(default=20, ge=2, description="Broker backstop: x-delivery-limit")

    @field_validator("backoff")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(v <= 0 for v in value):
            raise ValueError("every backoff delay must be > 0 seconds")
        return value


class WorkerSettings(Section):
    prefetch: int = Field(default=0, ge=0, description="Unacked deliveries per worker; 0 = the worker's own "
                          "default (its concurrency for long jobs, more for quick ones)")
    concurrency: int = Field(default=0, ge=0, description="Jobs run at once; 0 = the worker's own default")
    grace_period: float = Field(default=60.0, ge=0, description="Seconds a running job may finish on SIGTERM")


class MetricsSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535, description="0 = pick a free port")


class LogSettings(Section):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class NotifySettings(Section):
    webhook_urls: list[SecretStr] = Field(default=[], description="Generic JSON webhooks")
    teams_urls: list[SecretStr] = Field(default=[], description="Microsoft Teams incoming webhooks")
    slack_urls: list[SecretStr] = Field(default=[], description="Slack (or Mattermost) incoming webhooks")
    allow_http_webhooks: bool = Field(default=False, description="Accept http:// webhook URLs (token and "
                                      "notifications then cross the network unencrypted); off: refused at start-up")
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "appservice-dr@localhost"
    smtp_to: list[str] = []
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_allow_plaintext_auth: bool = Field(default=False, description="Allow the SMTP login without STARTTLS or "
                                            "implicit TLS (it then crosses the network readable); off: refused at "
                                            "start-up")
    timeout: float = Field(default=10.0, gt=0)
    group_window: float = Field(default=900.0, ge=0, description="Seconds in which identical failures are "
                                                                 "grouped into one notification")
    pending_file: Path | None = Field(default=None, description="Where suppressed repeats and undelivered "
                                      "summaries are kept, so a restarted notifier still reports them (unset: in "
                                      "memory only)")


class StoreSettings(Section):
    kind: Literal["local", "s3", "smb"] = "local"
    local_path: Path = Path("./demo-store")
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")
    s3_bucket: str = "appservice-dr"
    s3_region: str | None = None
    s3_secure: bool = True
    s3_create_bucket: bool = True
    s3_part_size: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024, description="Multipart part size; "
                              "memory is about 3 parts, and an object holds at most 10,000 parts (16 MiB: 156 GiB)")
    smb_path: str = ""
    smb_username: str | None = None
    smb_password: SecretStr | None = None
    smb_port: int = 445
    smb_encrypt: bool = True


class EncryptionSettings(Section):
    certificate: Path | None = Field(default=None, description="PEM X.509 certificate whose public key wraps "
                                     "each artifact's data key; encryption is on whenever it is set")
    compress: bool = True
    level: int = Field(default=3, ge=1, le=19, description="zstd level")
    signing_key: Path | None = Field(default=None, description="Ed25519 private key (PEM, 0600) the workers "
                                     "sign every stored object with (`appsvc-dr keys create-signing`)")
    verify_keys: Annotated[tuple[Path, ...], NoDecode] = Field(default=(), description="Public verify key PEMs "
                                                               "(comma-separated; several during a rotation): "
                                                               "reads require a signature by one of them")
    allow_unsigned: bool = Field(default=False, description="Read legacy unsigned objects (with a warning)")

    @field_validator("verify_keys", mode="before")
    @classmethod
    def _split_verify_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.lstrip().startswith("[") else comma_list(value)
        return value


class UploadSettings(Section):
    verify: Literal["stat", "read-back"] = Field(default="stat", description="How a stored artifact is checked: "
                                                 "size via stat, or re-read and SHA-256 of the stored bytes")


class StagingSettings(Section):
    """Credentials for staged files and drop shares given as UNC paths in events."""

    smb_username: str | None = None
    smb_password: SecretStr | None = None
    smb_port: int = 445
    smb_encrypt: bool = True
    database_dir: str = Field(default="/var/tmp/appsvc-dr/staging", description=r"Where database backups are "
                              r"staged for the upload worker: a local directory or \\server\share\dir (SQL "
                              "Server writes there directly; its service account needs write access)")
    roots: list[str] = Field(default=[], description=r"More directories (local or \\server\share\dir) where "
                             "other producers stage files for artifact-ready; the upload worker reads and deletes "
                             "only files strictly inside database_dir or one of these (JSON list)")

    @field_validator("roots")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for root in value:
            if not (root.startswith("/") or root.startswith("\\\\")):
                raise ValueError(rf"staging root {root!r} must be an absolute local path or \\server\share\dir")
        return value


class SecretsSettings(Section):
    drop_path: str = Field(default="", description=r"Drop location (local dir or \\server\share\dir) where "
                           "`appsvc-dr publish secrets-rotated --file` copies SystemSecrets.json; the secrets "
                           "worker reads (and deletes) only SystemSecrets*.json files strictly inside it")
    max_size: int = Field(default=1024 * 1024, ge=2, description="Largest accepted SystemSecrets.json, bytes")
    delete_drop: bool = Field(default=True, description="Delete the plaintext file from the drop location once "
                              "the encrypted copy is verified")
    trigger_backup: bool = Field(default=True, description="Publish backup-due (reason secrets-rotated) after "
                                 "storing a new version")


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` → timedelta (ValueError otherwise)."""
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"invalid duration {value!r}: use a number and a unit s, m, h, d or w (e.g. 30d)")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


class RetentionSettings(Section):
    """Which backup sets of a stamp to keep (see ``workers.artifacts.retention`` for the rules)."""

    keep_last: int = Field(default=7, ge=0, description="Newest complete backup sets to keep (the newest "
                                                         "complete set is always kept, even with 0)")
    keep_within: timedelta | None = Field(default=None, description="Also keep every set (complete or not) "
                                          "younger than this, e.g. 30d, 12h or ISO 8601 P30D")
    auto: bool = Field(default=True, description="The catalog worker applies retention whenever a set completes")
    set_deadline: timedelta = Field(default=timedelta(hours=6), description="How long after its time (in its id) "
                                    "a backup set may still get its plan: artifacts for an unplanned set are retried "
                                    "until then, and dead-lettered after")
    incomplete_grace: timedelta | None = Field(default=None, description="Incomplete sets younger than this are "
                                               "never deleted (they may still complete); default: set_deadline")

    @field_validator("keep_within", "set_deadline", "incomplete_grace", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str) and _DURATION.match(value):
            return parse_duration(value)
        return value

    @field_validator("keep_within", "set_deadline", "incomplete_grace")
    @classmethod
    def _positive(cls, value: timedelta | None, info: ValidationInfo) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError(f"{info.field_name} must be longer than 0 seconds")
        return value

    @property
    def grace(self) -> timedelta:
        """How long an incomplete set is kept at least: ``incomplete_grace``, else the set deadline."""
        return self.incomplete_grace or self.set_deadline


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APPSVC_DR_", env_nested_delimiter="__", extra="forbid")

    stamp: str = Field(default="stamp1", description="Default stamp name for producers")
    components: Annotated[tuple[Component, ...], NoDecode] = Field(
        default=ALL_COMPONENTS, min_length=1, description="What this site backs up (comma-separated): secrets, "
        "databases, fileshare. Backup sets ask for these; workers and queues of the others are not set up.")
    broker: BrokerSettings = BrokerSettings()
    retry: RetrySettings = RetrySettings()
    worker: WorkerSettings = WorkerSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    notify: NotifySettings = NotifySettings()
    store: StoreSettings = StoreSettings()
    encryption: EncryptionSettings = EncryptionSettings()
    upload: UploadSettings = UploadSettings()
    staging: StagingSettings = StagingSettings()
    retention: RetentionSettings = RetentionSettings()
    secrets: SecretsSettings = SecretsSettings()
    database: DatabaseSettings = DatabaseSettings()
    fileshare: FileshareSettings = FileshareSettings()

    @field_validator("components", mode="before")
    @classmethod
    def _split_components(cls, value: object) -> object:
        if isinstance(value, str):  # "secrets,databases" or a JSON list
            value = json.loads(value) if value.lstrip().startswith("[") else comma_list(value)
        if isinstance(value, (list, tuple)) and len(set(value)) != len(value):
            raise ValueError(f"components repeat: {list(value)}")
        return value


def comma_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (settings and command-line options alike)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _from_file(path: Path) -> type[Settings]:
    """Settings that also read ``path`` (TOML), below the environment."""

    class FileSettings(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                       file_secret_settings):  # type: ignore[override]
            return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=path)

    return FileSettings


def load_settings(config_file: str | Path | None = None, **overrides: object) -> Settings:
    """Environment (highest), then the TOML file (``config_file`` or $APPSVC_DR_CONFIG_FILE), then defaults.
    Raises ConfigurationError naming every problem."""
    config_file = config_file or os.environ.get(CONFIG_FILE_ENV) or None
    cls: type[Settings] = Settings
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigurationError(f"configuration file {path} does not exist",
                                     hint=f"Create it, or fix --config / {CONFIG_FILE_ENV}.")
        cls = _from_file(path)
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False))
        raise ConfigurationError(f"invalid configuration: {problems}",
                                 hint="Environment variables are APPSVC_DR_<SECTION>__<FIELD> (e.g. "
                                      "APPSVC_DR_BROKER__HOST); see README 'Configuration'.") from None
    except Exception as exc:  # TOML syntax errors and the like
        raise ConfigurationError(f"cannot read configuration: {exc}") from None
