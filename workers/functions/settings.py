"""``functions`` settings (``APPSVC_DR_FUNCTIONS__<FIELD>``): the storage accounts Function Apps depend on
(``AzureWebJobsStorage``, ``AzureWebJobsDashboard``) and how to copy them.

``ACCOUNTS`` is a JSON list, e.g. ``[{"name": "funcstore", "connection_string": "DefaultEndpointsProtocol=..."}]``
or ``[{"name": "funcstore", "account_key": "...", "endpoint_suffix": "local.azurestack.external"}]`` (or a
``sas_token`` instead of the key). Keys, SAS tokens and connection strings are SecretStr: never printed."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from contracts.envelope import Name

MiB = 1024 * 1024


class StorageAccount(BaseModel, extra="forbid"):
    name: Name = Field(description="The storage account's name (also names its copy in the backup set)")
    connection_string: SecretStr | None = Field(default=None, description="A full connection string (takes "
                                                "precedence over account_key / sas_token)")
    account_key: SecretStr | None = None
    sas_token: SecretStr | None = Field(default=None, description="A SAS with list+read on blob, queue and table "
                                        "(account SAS: srt=sco, sp=rl)")
    endpoint_suffix: str = Field(default="core.windows.net", description="Azure Stack Hub: e.g. "
                                 "local.azurestack.external (endpoints are <name>.blob.<suffix> and so on)")
    protocol: str = Field(default="https", pattern="^https?$")

    @model_validator(mode="after")
    def _has_credentials(self) -> "StorageAccount":
        if not (self.connection_string or self.account_key or self.sas_token):
            raise ValueError(f"account {self.name}: give connection_string, account_key or sas_token")
        return self

    def connection(self) -> str:
        """The connection string the SDKs take (a secret: never log it)."""
        if self.connection_string:
            return self.connection_string.get_secret_value()
        base = f"DefaultEndpointsProtocol={self.protocol};AccountName={self.name};EndpointSuffix={self.endpoint_suffix}"
        if self.account_key:
            return f"{base};AccountKey={self.account_key.get_secret_value()}"
        sas = self.sas_token.get_secret_value().lstrip("?") if self.sas_token else ""
        return (f"BlobEndpoint={self.protocol}://{self.name}.blob.{self.endpoint_suffix};"
                f"QueueEndpoint={self.protocol}://{self.name}.queue.{self.endpoint_suffix};"
                f"TableEndpoint={self.protocol}://{self.name}.table.{self.endpoint_suffix};"
                f"SharedAccessSignature={sas}")


class FunctionsSettings(BaseModel, extra="forbid"):
    accounts: list[StorageAccount] = Field(default_factory=list)
    downloads: int = Field(default=8, ge=1, le=64, description="Blobs downloaded at once (threads; past ~8 the "
                           "interpreter, not the network, is the limit)")
    pack_size: int = Field(default=16 * MiB, ge=MiB, le=256 * MiB, description="Small blobs are stored together "
                           "in packs of about this size (held in memory while filled)")
    large_blob: int = Field(default=4 * MiB, ge=64 * 1024, description="Blobs of at least this size are stored "
                            "alone, streamed (never held in memory)")
    retries: int = Field(default=4, ge=0, le=20, description="SDK retries (exponential backoff) of throttled "
                         "(503 ServerBusy) or failed requests before the job is retried by the runner")
    backoff: float = Field(default=2.0, gt=0, le=60, description="First SDK retry wait in seconds (doubles "
                           "each retry)")
    queue_copy: Literal["peek", "receive"] = Field(default="peek", description="peek: at most 32 messages per "
                                                   "queue (the service's limit), nothing changes in the queue; "
                                                   "receive: every message, each hidden from the Function App "
                                                   "while the queue is copied and its dequeue count raised by one "
                                                   "(README, \"Queues\")")
    queue_visibility_timeout: int = Field(default=300, ge=1, le=7 * 24 * 3600, description="receive: seconds "
                                          "a copied message stays hidden at most if the copy dies before making "
                                          "it visible again")
    timeout: float = Field(default=60.0, gt=0, description="Seconds per storage request (connect and read)")

    @model_validator(mode="after")
    def _unique(self) -> "FunctionsSettings":
        names = [a.name for a in self.accounts]
        if len(set(names)) != len(names):
            raise ValueError(f"accounts repeat: {names}")
        if self.large_blob > self.pack_size:
            raise ValueError("large_blob must not exceed pack_size")
        return self
