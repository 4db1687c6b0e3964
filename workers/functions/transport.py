"""The blob client's HTTP session: azure-core's ``RequestsTransport`` (its documented ``session`` argument) over a
``requests.Session`` whose public ``request`` sends plain GETs and HEADs (listings, downloads: all a backup
sends) straight to urllib3's connection pool, the way ``requests``' own ``HTTPAdapter.send`` does, without the
per-request work a storage request never needs (``Request`` → ``PreparedRequest`` re-parsing and re-quoting the
URL azure-core built, cookie jars, hooks, environment lookups). Everything else (uploads, proxies, client
certificates) goes through ``requests`` unchanged.

Errors come out as ``requests`` raises them (``ConnectionError`` around urllib3's ``ProtocolError``,
``ReadTimeout``, ``SSLError``; urllib3's ``NewConnectionError`` / ``ConnectTimeoutError`` as they are), so
azure-core maps them to the same ``ServiceRequestError`` / ``ServiceResponseError`` and its retry policy retries
them as before. TLS follows ``verify`` as ``requests`` does: ``True`` is ``requests``' CA bundle (certifi), a path
is that bundle or directory, ``False`` does not verify."""
from __future__ import annotations

import os

import requests
import requests.certs
import urllib3
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ProtocolError, ReadTimeoutError, SSLError as Urllib3SSLError

FAST_METHODS = ("GET", "HEAD")


def environment_ca_bundle() -> str | None:
    """The CA bundle ``requests`` would read from the environment (REQUESTS_CA_BUNDLE, then CURL_CA_BUNDLE)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


class DirectSession(requests.Session):
    """A session for one storage account's blob endpoint keeping ``connections`` connections per host open.
    ``trust_env`` is off: the caller reads the proxy variables once (``proxies``) and passes the CA bundle as
    the client's ``connection_verify``."""

    def __init__(self, connections: int) -> None:
        super().__init__()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=connections)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self.trust_env = False
        self.direct_pools = urllib3.PoolManager(num_pools=4, maxsize=connections)
        self.direct_count = 0                        # requests sent the short way (tests, benchmarks)

    def close(self) -> None:
        super().close()
        self.direct_pools.clear()

    def request(self, method, url, params=None, data=None, headers=None, cookies=None, files=None, auth=None,
                timeout=None, allow_redirects=True, proxies=None, hooks=None, stream=None, verify=None, cert=None,
                json=None):
        if (method not in FAST_METHODS or data or params or cookies or files or auth or hooks or cert
                or json is not None or allow_redirects or proxies or self.cookies or self.auth
                or self.cert or self.hooks.get("response") or requests.utils.select_proxy(url, self.proxies)):
            return super().request(method, url, params=params, data=data, headers=headers, cookies=cookies,
                                   files=files, auth=auth, timeout=timeout, allow_redirects=allow_redirects,
                                   proxies=proxies, hooks=hooks, stream=stream, verify=verify, cert=cert, json=json)
        response = send_direct(self.direct_pools, method, url, headers or {}, timeout, bool(stream),
                               self.verify if verify is None else verify)
        self.direct_count += 1
        return response


def send_direct(pools: urllib3.PoolManager, method: str, url: str, headers, timeout, stream: bool,
                verify) -> requests.Response:
    """What ``requests``' ``HTTPAdapter.send`` does for a request without a body, proxy or client certificate."""
    parsed = urllib3.util.parse_url(url)
    pool = pools.connection_from_url(url, pool_kwargs=_tls(verify) if parsed.scheme == "https" else None)
    try:
        raw = pool.urlopen(method, parsed.request_uri, body=None, headers=dict(headers), redirect=False,
                           assert_same_host=False, preload_content=False, decode_content=False, retries=False,
                           timeout=_timeout(timeout))
    except ProtocolError as exc:
        raise requests.exceptions.ConnectionError(exc, request=None) from exc
    except ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc, request=None) from exc
    except Urllib3SSLError as exc:
        raise requests.exceptions.SSLError(exc, request=None) from exc
    except OSError as exc:          # a socket error past connecting: as requests' adapter reports it
        raise requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", exc)) from exc
    response = requests.Response()
    response.status_code, response.reason, response.raw, response.url = raw.status, raw.reason, raw, url
    response.headers = CaseInsensitiveDict(raw.headers)
    response.encoding = requests.utils.get_encoding_from_headers(response.headers)
    if not stream:
        response.content            # read the body now (the connection goes back to the pool)
    return response


def _tls(verify) -> dict:
    if verify is False:
        return {"cert_reqs": "CERT_NONE"}
    bundle = requests.certs.where() if verify is True or verify is None else str(verify)
    return {"cert_reqs": "CERT_REQUIRED",
            **({"ca_cert_dir": bundle} if os.path.isdir(bundle) else {"ca_certs": bundle})}


def _timeout(timeout) -> urllib3.Timeout:
    if isinstance(timeout, tuple):
        return urllib3.Timeout(connect=timeout[0], read=timeout[1])
    return urllib3.Timeout(connect=timeout, read=timeout)
