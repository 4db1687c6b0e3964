"""Assemble and run workers: metrics, status endpoint, one runner per worker, signals, graceful exit."""
from __future__ import annotations

import importlib
import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from contracts import Registry, default_registry
from contracts.events.backup import ALL_COMPONENTS
from workers.config import Settings
from workers.middleware.base import Hooks, Middleware
from workers.middleware.metrics import Metrics, MetricsMiddleware
from workers.runtime.errors import ConfigurationError
from workers.runtime.worker import WorkerSpec
from workers.runtime.http import StatusServer
from workers.runtime.runner import Runner

log = logging.getLogger("appsvc_dr.app")

WorkerFactory = Callable[["Deps"], WorkerSpec]


@dataclass
class Deps:
    """What a worker factory may use; built once per process. The composition hands each built-in worker only
    its own sections of ``settings``; a custom factory (``package.module:function``) picks what it needs."""

    settings: Settings
    metrics: Metrics
    registry: Registry = field(default_factory=default_registry)


@dataclass(frozen=True)
class Builtin:
    """A built-in worker: the module that declares its ``SPEC`` (event models and handlers, unbound) and how
    the composition builds it from :class:`Deps`. The module is imported only when it is needed."""

    module: str
    build: Callable[[Any, Deps], WorkerSpec]  # (the module, deps) -> the spec bound to its handler

    def declared(self) -> WorkerSpec:
        return importlib.import_module(self.module).SPEC

    def __call__(self, deps: Deps) -> WorkerSpec:
        return self.build(importlib.import_module(self.module), deps)


# Each built-in worker's factory is given only the sections it reads (keyword = the section's name in Settings).
def _db_backup(module, deps: Deps) -> WorkerSpec:
    s = deps.settings
    return module.build_db_backup_worker(database=s.database, staging=s.staging, metrics=deps.metrics)


def _notifier(module, deps: Deps) -> WorkerSpec:
    counter = deps.metrics.notifications
    spec = module.build_notifier_worker(deps.settings.notify,
                                        observe=lambda sink, outcome: counter.labels(sink, outcome).inc())
    for sink in ("*", *(n.name for n in spec.target.notifiers)):  # at 0 from the start: increase() sees the 1st
        for outcome in (("grouped",) if sink == "*" else ("sent", "failed")):
            counter.labels(sink, outcome)
    return spec


def _upload(module, deps: Deps) -> WorkerSpec:
    s = deps.settings
    return module.build_upload_worker(upload=s.upload, store=s.store, encryption=s.encryption, staging=s.staging,
                                      retention=s.retention)


def _secrets(module, deps: Deps) -> WorkerSpec:
    s = deps.settings
    spec = module.build_secrets_worker(secrets=s.secrets, store=s.store, encryption=s.encryption,
                                       verify=s.upload.verify, staging=s.staging, retention=s.retention,
                                       stamp=s.stamp, components=s.components, metrics=deps.metrics)
    for outcome in ("stored", "duplicate"):  # at 0 from the start: increase() sees the first rotation
        deps.metrics.secrets_rotations.labels(s.stamp, outcome)
    return spec


def _catalog(module, deps: Deps) -> WorkerSpec:
    s = deps.settings
    return module.build_catalog_worker(retention=s.retention, store=s.store, encryption=s.encryption,
                                       database=s.database, components=s.components, stamp=s.stamp,
                                       metrics=deps.metrics, newest_secrets=_newest_secrets)


def _newest_secrets(store, stamp: str):
    """When the newest stored secrets version of ``stamp`` was rotated (None: none stored): handed to the catalog,
    which may not import the secrets worker."""
    from workers.secrets.versions import latest
    newest = latest(store, stamp)
    return newest.rotated_at if newest else None


def _fileshare(module, deps: Deps) -> WorkerSpec:
    s = deps.settings
    return module.build_fileshare_worker(fileshare=s.fileshare, store=s.store, encryption=s.encryption,
                                         verify=s.upload.verify, retention=s.retention)


def _mirror(module, deps: Deps) -> WorkerSpec:
    s = deps.settings
    return module.build_mirror_worker(mirror=s.mirror, store=s.store, retention=s.retention,
                                      encryption=s.encryption, metrics=deps.metrics)


def _functions(module, deps: Deps) -> WorkerSpec:
    s = deps.settings
    return module.build_functions_worker(functions=s.functions, store=s.store, encryption=s.encryption,
                                         verify=s.upload.verify, retention=s.retention)


BUILTIN: dict[str, Builtin] = {
    "db-backup": Builtin("workers.dbbackup.handler", _db_backup),
    "notifier": Builtin("workers.notifier.handler", _notifier),
    "upload": Builtin("workers.upload.handler", _upload),
    "secrets": Builtin("workers.secrets.handler", _secrets),
    "catalog": Builtin("workers.catalog.handler", _catalog),
    "fileshare": Builtin("workers.fileshare.handler", _fileshare),
    "mirror": Builtin("workers.mirror.handler", _mirror),
    "functions": Builtin("workers.functions.handler", _functions),
}


def resolve(name: str) -> WorkerFactory:
    """A built-in worker name, or ``package.module:function`` returning a WorkerSpec from Deps."""
    if name in BUILTIN:
        return BUILTIN[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot load worker factory {name!r}: {exc}") from None
    raise ConfigurationError(f"unknown worker {name!r}", hint=f"Known workers: {', '.join(sorted(BUILTIN))}.")


def builtin_bindings(names: Iterable[str] | None = None) -> dict[str, list[str]]:
    """The event types each built-in worker's queue is bound to, read from the worker's own ``SPEC``."""
    return {name: BUILTIN[name].declared().event_types for name in (BUILTIN if names is None else names)}


COMPONENT_WORKERS = {"secrets": "secrets", "databases": "db-backup", "fileshare": "fileshare",
                     "functions": "functions"}


def site_workers(components: Iterable[str]) -> list[str]:
    """The built-in workers a site that backs up ``components`` runs: those of its components, plus the
    upload, catalog and notifier workers every site needs."""
    skipped = {worker for component, worker in COMPONENT_WORKERS.items() if component not in components}
    return sorted(set(BUILTIN) - skipped)


def topology_of(specs: list[WorkerSpec], components: Iterable[str] = ALL_COMPONENTS) -> list[tuple[str, list[str]]]:
    """The site's built-in workers' bindings plus the given ones. Their queues are always declared, so a
    follow-up waits durably in the queue of a worker that is not running yet instead of being lost; workers of
    components the site does not back up get none (nothing would ever drain it)."""
    wanted = site_workers(components)
    bindings = builtin_bindings(wanted)
    bindings.update({s.name: s.event_types for s in specs})
    return sorted(bindings.items())


class App:
    """Workers of one process, sharing a metrics registry and one status endpoint."""

    def __init__(self, settings: Settings, names: list[str | WorkerFactory],
                 middleware: list[Middleware] | None = None, registry: Registry | None = None) -> None:
        self.settings = settings
        if settings.encryption.signing_key is None:
            log.warning("no signing key configured (APPSVC_DR_ENCRYPTION__SIGNING_KEY): stored objects are not "
                        "signed, so readers cannot tell them from forged ones; `appsvc-dr keys create-signing`")
        self.metrics = Metrics()
        deps = Deps(settings, self.metrics, registry or default_registry())
        self.specs = [(resolve(n) if isinstance(n, str) else n)(deps) for n in names]
        names_seen = [s.name for s in self.specs]
        if len(set(names_seen)) != len(names_seen):
            raise ConfigurationError(f"worker listed twice: {names_seen}")
        for model in {m for spec in self.specs for m in spec.models}:  # a worker decodes what it declares
            try:
                deps.registry.register(model)
            except ValueError as exc:
                raise ConfigurationError(str(exc), hint="Give the worker's event model its own type or "
                                         "version.") from None
        hooks = Hooks([MetricsMiddleware(self.metrics, {s.name: s.event_types for s in self.specs}),
                       *(middleware or [])])
        all_workers = topology_of(self.specs, settings.components)
        self.runners = [Runner(s, deps.registry, broker=settings.broker, retry=settings.retry, worker=settings.worker,
                               all_workers=all_workers, hooks=hooks) for s in self.specs]
        self.status: StatusServer | None = None
        self.errors: list[BaseException] = []

    def ready(self) -> dict[str, bool]:
        return {r.spec.name: r.connected.is_set() for r in self.runners}

    def start_status(self) -> None:
        m = self.settings.metrics
        if m.enabled:
            self.status = StatusServer(self.metrics.registry, self.ready, m.host, m.port).start()
            log.info("metrics and health on http://%s:%d/metrics", m.host, self.status.port)

    def stop(self) -> None:
        for r in self.runners:
            r.stop()

    def run(self, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`stop`). 0 on a clean stop, 2 on a configuration error."""
        self.start_status()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, _frame: (log.info("signal %d: stopping", signum), self.stop()))
        threads = [threading.Thread(target=self._run_one, args=(r,), name=f"runner-{r.spec.name}")
                   for r in self.runners]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
        if self.status:
            self.status.stop()
        return 2 if self.errors else 0

    def _run_one(self, runner: Runner) -> None:
        try:
            runner.run()
        except ConfigurationError as exc:
            log.error("worker %s cannot start: %s — how to fix: %s", runner.spec.name, exc.message, exc.hint)
            self.errors.append(exc)
            self.stop()
