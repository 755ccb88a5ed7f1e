"""JSON Schema for config and mapping files, so editors can complete and check them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from connector.config import ConfigFile
from connector.mapping import MappingFile


def config_schema() -> dict[str, Any]:
    return _finish(ConfigFile.model_json_schema(by_alias=True), "connector config.yaml")


def mapping_schema() -> dict[str, Any]:
    return _finish(MappingFile.model_json_schema(by_alias=True), "connector mapping file")


def _finish(schema: dict[str, Any], title: str) -> dict[str, Any]:
    schema["title"] = title
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in (("config.schema.json", config_schema()), ("mapping.schema.json", mapping_schema())):
        path = folder / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
