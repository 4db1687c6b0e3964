"""A ``backup-due`` asking for a component this site does not back up (``APPSVC_DR_COMPONENTS``).

``appsvc-dr publish`` and ``schedule`` refuse such a request, but a producer publishing straight to RabbitMQ
(the PowerShell rotation hook, a script) is not checked. No worker would deliver that component, and a plan
naming it would keep the set incomplete for ever. The catalog therefore plans only the components this site
serves, records the others as ``unserved`` in ``plan.json``, and tells the operator once with a ``job-failed``
warning (worker ``catalog``, error class ``ComponentNotServed``, a deterministic event id per set, re-emitted
only by a redelivery of the event that wrote the plan). A request for nothing this site serves writes no plan.
"""
from __future__ import annotations

import uuid

from contracts import BackupDue, Envelope, JobFailed, JobFailedPayload

ERROR_CLASS = "ComponentNotServed"
_IDS = uuid.UUID("8b3e5a41-2f6d-4c1a-9e07-5d2c7b9a4f63")


def split(requested: tuple[str, ...], site: tuple[str, ...] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(served, unserved) of ``requested``; every component is served when ``site`` is None."""
    if site is None:
        return requested, ()
    return tuple(c for c in requested if c in site), tuple(c for c in requested if c not in site)


def warning(event: BackupDue, unserved: tuple[str, ...], site: tuple[str, ...], planned: bool) -> Envelope:
    stamp, set_id = event.stamp, event.correlation_id
    what = ", ".join(unserved)
    outcome = "planned without it" if planned else "nothing else was asked for: no plan written"
    return event.follow_up(JobFailed, JobFailedPayload(
        worker="catalog", failed_event_id=event.event_id, failed_event_type=event.type, error_class=ERROR_CLASS,
        message=(f"backup-due from {event.source} for backup set {stamp}/{set_id} asks for {what}, which this "
                 f"site does not back up (APPSVC_DR_COMPONENTS={','.join(site)}); {outcome}")[:4000],
        attempts=1, will_retry=False, severity="warning",
        hint=(f"Have the producer ask only for {','.join(site)} (`appsvc-dr publish backup-due` and `schedule` "
              f"check this), or add {what} to APPSVC_DR_COMPONENTS and run its worker; then publish a new "
              "backup-due for the components that were left out.")[:2000]),
        source="worker:catalog", event_id=uuid.uuid5(_IDS, f"{stamp}/{set_id}"))
