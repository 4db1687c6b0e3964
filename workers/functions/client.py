"""SDK clients of one storage account, and what their errors mean here: throttling and outages are transient
(the SDK retries with exponential backoff first, then the runner), refused credentials are permanent with a hint.
Messages carry the status and the service's error code only: never a key, SAS or connection string."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError, \
    ServiceResponseError
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient, ExponentialRetry as BlobRetry
from azure.storage.queue import ExponentialRetry as QueueRetry, QueueServiceClient

from workers.functions.transport import DirectSession, environment_ca_bundle
from workers.runtime.errors import PermanentError, TransientError

BLOCK_SIZE = 256 * 1024        # bytes per read of a streamed download (what the SDK's own transport uses)
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
AUTH_HINT = ("Check the account's key, SAS or connection string in APPSVC_DR_FUNCTIONS__ACCOUNTS (a SAS needs "
             "list and read on blob, queue and table, and must not have expired); for Azure Stack Hub set "
             "endpoint_suffix. The key may have been rotated: copy it again from the portal.")


@dataclass
class AccountClients:
    name: str
    blobs: BlobServiceClient
    queues: QueueServiceClient
    tables: TableServiceClient
    blob_session: DirectSession

    def close(self) -> None:
        for c in (self.blobs, self.queues, self.tables):
            c.close()


def open_account(name: str, connection: str, *, retries: int, timeout: float,
                 backoff: float = 1.0, connections: int = 16, response_hook=None) -> AccountClients:
    """Clients for ``connection`` (a connection string; a secret). ``response_hook`` (benchmarks) sees every
    blob service response (the SDK's ``raw_response_hook``)."""
    common = {"connection_timeout": timeout, "read_timeout": timeout}
    hook = {"raw_response_hook": response_hook} if response_hook else {}
    session = DirectSession(connections)
    # A transport given to the SDK keeps its own connection settings (the SDK's timeouts and block size apply
    # only to the transport it builds itself); the CA bundle of the environment is passed the same way, since
    # the session does not read the environment per request.
    transport = RequestsTransport(session=session, session_owner=True, connection_verify=environment_ca_bundle()
                                  or True, connection_data_block_size=BLOCK_SIZE, **common)
    try:
        blobs = BlobServiceClient.from_connection_string(connection, retry_policy=BlobRetry(
            initial_backoff=backoff, increment_base=2, retry_total=retries), transport=transport, **common, **hook)
        session.proxies.update(requests.utils.get_environ_proxies(blobs.url))
        return AccountClients(
            name, blobs,
            QueueServiceClient.from_connection_string(connection, retry_policy=QueueRetry(
                initial_backoff=backoff, increment_base=2, retry_total=retries), **common),
            TableServiceClient.from_connection_string(connection, retry_total=retries, retry_backoff_factor=backoff,
                                                      **common), session)
    except ValueError as exc:  # a malformed connection string: say so without echoing it
        raise PermanentError(f"storage account {name}: the connection string cannot be read "
                             f"({type(exc).__name__})", hint=AUTH_HINT) from None


def classify(exc: BaseException, account: str, what: str) -> Exception:
    """The project's error for an SDK error met while doing ``what`` on ``account``."""
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None) or ""
    code = str(getattr(code, "value", code))     # the storage SDKs give an enum (StorageErrorCode)
    where = f"storage account {account}: {what}"
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return PermanentError(f"{where}: access refused (HTTP {status} {code})".rstrip(), hint=AUTH_HINT)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TransientError(f"{where}: cannot reach the service ({type(exc).__name__})",
                              hint="Retried with backoff; check the endpoint (endpoint_suffix) and the network.")
    if isinstance(exc, HttpResponseError) and (status in TRANSIENT_STATUS or code in ("ServerBusy",
                                                                                      "OperationTimedOut")):
        return TransientError(f"{where}: the service is busy or failing (HTTP {status} {code})".rstrip(),
                              hint="Throttled or unavailable: retried with backoff. If it persists, run the backup "
                                   "at a quieter time or lower APPSVC_DR_FUNCTIONS__DOWNLOADS.")
    return PermanentError(f"{where}: HTTP {status} {code}".rstrip(),
                          hint="The storage service refused the request; see the error code.")


@contextlib.contextmanager
def translated(account: str, what: str) -> Iterator[None]:
    """Run a block of SDK calls, raising the project's errors instead of the SDK's."""
    try:
        yield
    except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
        raise classify(exc, account, what) from None
