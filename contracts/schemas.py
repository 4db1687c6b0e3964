"""JSON Schema export so non-Python producers (the PowerShell rotation hook) can validate what they send.

``python -m contracts.schemas`` (or ``appsvc-dr contracts export``) rewrites ``contracts/schemas/``.
"""
from __future__ import annotations

import json
from pathlib import Path

from contracts.envelope import Envelope

SCHEMA_DIR = Path(__file__).with_name("schemas")


def schema_filename(model: type[Envelope]) -> str:
    return f"{model.event_type}.v{model.event_version}.schema.json"


def render(model: type[Envelope]) -> str:
    schema = model.model_json_schema(mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$id": f"https://appservice-dr/schemas/{schema_filename(model)}", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export(models: list[type[Envelope]], directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in models:
        path = directory / schema_filename(model)
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


def stale(models: list[type[Envelope]], directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models (empty when all are current)."""
    out = []
    for model in models:
        path = directory / schema_filename(model)
        if not path.exists() or path.read_text(encoding="utf-8") != render(model):
            out.append(path.name)
    expected = {schema_filename(m) for m in models}
    out += sorted(p.name for p in directory.glob("*.schema.json") if p.name not in expected)
    return out


if __name__ == "__main__":
    from contracts import default_registry

    for written_path in export(default_registry().models()):
        print(written_path)
