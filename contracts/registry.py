"""Registry from (type, version) to event model, and decoding of raw bytes into typed envelopes."""
from __future__ import annotations

import json
from typing import Iterable, TypeVar

from pydantic import ValidationError

from contracts.envelope import Envelope
from contracts.errors import ContractError

E = TypeVar("E", bound=type[Envelope])


class Registry:
    """Maps (type, version) to an :class:`Envelope` subclass. Instances are cheap; tests make their own."""

    def __init__(self, models: Iterable[type[Envelope]] = ()) -> None:
        self._models: dict[tuple[str, int], type[Envelope]] = {}
        for model in models:
            self.register(model)

    def register(self, model: E) -> E:
        key = (model.event_type, model.event_version)
        if not key[0] or not key[1]:
            raise TypeError(f"{model.__name__} must pin type and version with Literal defaults")
        existing = self._models.get(key)
        if existing is not None and existing is not model:
            raise ValueError(f"event {key[0]} v{key[1]} is already registered as {existing.__name__}")
        self._models[key] = model
        return model

    def models(self) -> list[type[Envelope]]:
        return [self._models[k] for k in sorted(self._models)]

    def types(self) -> list[str]:
        return sorted({t for t, _ in self._models})

    def model_for(self, event_type: str, version: int) -> type[Envelope]:
        try:
            return self._models[(event_type, version)]
        except KeyError:
            known = sorted(v for t, v in self._models if t == event_type)
            if not known:
                raise ContractError("unknown-type", f"unknown event type {event_type!r}; known: "
                                    f"{', '.join(self.types())}", event_type=event_type) from None
            raise ContractError("unknown-version", f"{event_type} has no schema version {version!r}; "
                                f"known versions: {known}", event_type=event_type) from None

    def decode(self, raw: bytes | str, hint: tuple[str | None, object] | None = None) -> Envelope:
        """Raw bytes to a typed envelope, or one :class:`ContractError` saying exactly what is wrong.

        ``hint`` is the (type, version) the transport claims (AMQP ``type`` property and ``x-dr-version``
        header): when it names a registered model, the body is parsed once, straight into that model. Any
        mismatch falls back to the careful path below, so a wrong hint never changes the result or the error.
        """
        model = self._models.get(hint) if hint and isinstance(hint[1], int) else None  # type: ignore[arg-type]
        if model is not None:
            try:
                return model.__pydantic_validator__.validate_json(raw)  # model_validate_json, minus a layer
            except ValidationError:
                pass
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ContractError("not-json", f"body is not UTF-8 JSON ({exc})") from None
        except RecursionError:  # e.g. 10,000 x "[": fail on this delivery, never crash the consumer
            raise ContractError("too-deep", "body is malformed: JSON arrays/objects nested deeper than the "
                                "parser allows (no event nests more than a few levels)") from None
        if not isinstance(data, dict):
            raise ContractError("not-an-object", f"body is JSON {type(data).__name__}, expected an object")
        event_type, version = data.get("type"), data.get("version")
        event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        if not isinstance(event_type, str) or not event_type:
            raise ContractError("missing-type", "field 'type' (string) is missing", event_id=event_id)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ContractError("unknown-version", f"field 'version' must be an integer, got {version!r}",
                                event_type=event_type, event_id=event_id)
        model = self.model_for(event_type, version)
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise ContractError("invalid", _describe(exc), event_type=event_type, event_id=event_id) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "(event)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
