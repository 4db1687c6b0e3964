"""The whole configuration, composed from every package's own section: environment variables
(``APPSVC_DR_<SECTION>__<FIELD>``) and an optional TOML file (one ``[section]`` table each).

Only the composition level (app, cli, demo, drill, scheduler) sees this root ``Settings``; everything below it
takes the sections it needs (``tests/unit/test_layering.py`` checks). Secrets are ``SecretStr``: they print as
``**********`` in reprs, logs and ``config check`` output.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, TomlConfigSettingsSource

from contracts.events.backup import DEFAULT_COMPONENTS, Component
from workers.artifacts.settings import RetentionSettings
from workers.engines.settings import DatabaseSettings
from workers.fileshare.settings import FileshareSettings
from workers.functions.settings import FunctionsSettings
from workers.mirror.settings import MirrorSettings
from workers.runtime.errors import ConfigurationError
from workers.runtime.parsing import comma_list
from workers.runtime.settings import BrokerSettings, LogSettings, MetricsSettings, RetrySettings, WorkerSettings
from workers.scheduler.settings import ScheduleSettings
from workers.secrets.settings import SecretsSettings
from workers.senders.settings import NotifySettings
from workers.storage.settings import EncryptionSettings, StagingSettings, StoreSettings
from workers.upload.settings import UploadSettings

CONFIG_FILE_ENV = "APPSVC_DR_CONFIG_FILE"
# Names that read like settings but are not, with the one to use (an unknown variable would be ignored silently).
NOT_SETTINGS = {"APPSVC_DR_CATALOG__SET_DEADLINE": "APPSVC_DR_RETENTION__SET_DEADLINE (the one set deadline, used "
                                                  "by the catalog and every worker)"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APPSVC_DR_", env_nested_delimiter="__", extra="forbid")

    stamp: str = Field(default="stamp1", description="Default stamp name for producers")
    components: Annotated[tuple[Component, ...], NoDecode] = Field(
        default=DEFAULT_COMPONENTS, min_length=1, description="What this site backs up (comma-separated): secrets, "
        "databases, fileshare, functions (opt-in: the storage accounts of Function Apps). Backup sets ask for these; workers and queues of the others are not set up.")
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
    mirror: MirrorSettings = MirrorSettings()
    functions: FunctionsSettings = FunctionsSettings()
    schedule: ScheduleSettings = ScheduleSettings()

    @field_validator("components", mode="before")
    @classmethod
    def _split_components(cls, value: object) -> object:
        if isinstance(value, str):  # "secrets,databases" or a JSON list
            value = json.loads(value) if value.lstrip().startswith("[") else comma_list(value)
        if isinstance(value, (list, tuple)) and len(set(value)) != len(value):
            raise ValueError(f"components repeat: {list(value)}")
        return value


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
    for name, use in NOT_SETTINGS.items():
        if name in os.environ:
            raise ConfigurationError(f"{name} is not a setting", hint=f"Use {use} instead.")
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
