"""The runtime's settings sections: broker connection, retries, worker capacity, metrics endpoint, logging
(``APPSVC_DR_BROKER__<FIELD>``, ``APPSVC_DR_RETRY__…``, ``APPSVC_DR_WORKER__…``, ``APPSVC_DR_METRICS__…``,
``APPSVC_DR_LOG__…``). The runner, topology and DLQ tools take these sections only; the root ``Settings``
(``workers/config.py``) composes them with every package's own section.

Secrets are ``SecretStr``: they print as ``**********`` in reprs, logs and ``config check`` output."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator


class BrokerSettings(BaseModel, extra="forbid"):
    host: str = "127.0.0.1"
    port: int = Field(default=5672, ge=1, le=65535)
    vhost: str = "/"
    username: str = "guest"
    password: SecretStr = SecretStr("guest")
    heartbeat: int = Field(default=60, ge=0, description="AMQP heartbeat in seconds")
    exchange: str = Field(default="appsvc-dr", min_length=1)
    queue_prefix: str = Field(default="appsvc-dr", min_length=1)
    connect_attempts: int = Field(default=0, ge=0, description="0 = retry forever (with backoff)")


class RetrySettings(BaseModel, extra="forbid"):
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


class WorkerSettings(BaseModel, extra="forbid"):
    prefetch: int = Field(default=0, ge=0, description="Unacked deliveries per worker; 0 = the worker's own "
                          "default (its concurrency for long jobs, more for quick ones)")
    concurrency: int = Field(default=0, ge=0, description="Jobs run at once; 0 = the worker's own default")
    grace_period: float = Field(default=60.0, ge=0, description="Seconds a running job may finish on SIGTERM")


class MetricsSettings(BaseModel, extra="forbid"):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535, description="0 = pick a free port")


class LogSettings(BaseModel, extra="forbid"):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
