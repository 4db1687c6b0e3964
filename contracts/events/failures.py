"""job-failed: a job was dead-lettered or exhausted its retries. Says what failed and how to fix it."""
from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from contracts.envelope import Envelope, Payload


class JobFailedPayload(Payload):
    worker: str = Field(min_length=1, description="Worker whose job failed")
    failed_event_id: UUID | None = Field(description="Id of the failed event; null if the message "
                                                     "could not be decoded at all")
    failed_event_type: str | None = Field(description="Type of the failed event, if known")
    error_class: str = Field(min_length=1, description="Kind of error, e.g. PermanentError, ContractError")
    message: str = Field(max_length=4000, description="What failed (never contains secret values)")
    attempts: int = Field(ge=0, description="How many times the job was attempted")
    will_retry: bool = Field(description="Whether the runtime retries the job on its own")
    hint: str = Field(max_length=2000, description="How to fix it")
    dead_letter_queue: str | None = Field(default=None, description="Where the message waits for replay")
    severity: Literal["error", "warning"] = "error"


class JobFailed(Envelope):
    type: Literal["job-failed"] = "job-failed"
    version: Literal[1] = 1
    payload: JobFailedPayload
