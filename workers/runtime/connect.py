"""Blocking connections for declaring topology and for producers, with broker errors turned into ours."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterable, Iterator, Sequence

import pika
from pika import exceptions as pex

from workers.runtime.amqp import connection_parameters
from workers.runtime.errors import ConfigurationError, TransientError
from workers.runtime.settings import BrokerSettings
from workers.runtime.topology import Topology

log = logging.getLogger("appsvc_dr.runtime")

CONNECTION_ERRORS = (pex.AMQPConnectionError, pex.ConnectionClosed, pex.StreamLostError,
                     pex.ChannelWrongStateError, pex.ConnectionWrongStateError, ConnectionError, OSError)


def _where(broker: BrokerSettings) -> str:
    return f"amqp://{broker.username}@{broker.host}:{broker.port}/{broker.vhost.lstrip('/')}"


@contextlib.contextmanager
def blocking_channel(broker: BrokerSettings) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A channel on a fresh blocking connection; auth problems are ConfigurationError, the rest transient."""
    try:
        conn = pika.BlockingConnection(connection_parameters(broker))
    except (pex.ProbableAuthenticationError, pex.AuthenticationError) as exc:
        raise ConfigurationError(f"RabbitMQ refused the login at {_where(broker)}",
                                 hint="Check APPSVC_DR_BROKER__USERNAME / APPSVC_DR_BROKER__PASSWORD "
                                      "(guest may only log in from localhost).") from exc
    except pex.ProbableAccessDeniedError as exc:
        raise ConfigurationError(f"RabbitMQ denied access to vhost {broker.vhost!r} at {_where(broker)}",
                                 hint="Create the vhost and grant permissions: rabbitmqctl add_vhost / "
                                      "set_permissions, or fix APPSVC_DR_BROKER__VHOST.") from exc
    except CONNECTION_ERRORS as exc:
        raise TransientError(f"cannot reach RabbitMQ at {_where(broker)}: {type(exc).__name__}",
                             hint="Is RabbitMQ running and reachable? Check APPSVC_DR_BROKER__HOST/PORT.") from exc
    try:
        yield conn.channel()
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def declare_topology(broker: BrokerSettings, topology: Topology,
                     workers: Iterable[tuple[str, Sequence[str]]]) -> None:
    with blocking_channel(broker) as channel:
        try:
            topology.declare(channel, list(workers))
        except pex.ChannelClosedByBroker as exc:
            if exc.reply_code == 406:
                raise ConfigurationError(
                    f"RabbitMQ refused the topology: {exc.reply_text}",
                    hint="A queue or exchange with this name exists with other arguments (e.g. created by an "
                         "older version or with another backoff). Delete it (rabbitmqctl delete_queue NAME) "
                         "after draining it, or set APPSVC_DR_BROKER__QUEUE_PREFIX.") from exc
            raise TransientError(f"declaring topology failed: {exc.reply_text}") from exc
