"""What the reports share: their declarations (``schemas/reports/*.json``) and the validator.

:func:`validate_json` checks a document against a JSON-Schema subset; the evaluation metrics
(:func:`metrics_schema`), the ``finetune`` results (:func:`cmcl_model.reports.finetune.finetune_schema`)
and the transfer records (:func:`cmcl_model.finetune.records.transfer_schema`) are all checked
with it before they are written.
"""

from __future__ import annotations

import json
import math
from importlib.resources import files
from typing import Any

__all__ = ["report_schema", "metrics_schema", "validate_json", "validate_metrics"]


def report_schema(name: str) -> dict[str, Any]:
    """``schemas/reports/<name>.json``, parsed."""
    return json.loads(files("schemas").joinpath(f"reports/{name}.json").read_text())


def metrics_schema() -> dict[str, Any]:
    """``schemas/reports/metrics.json``."""
    return report_schema("metrics")


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def validate_json(value: Any, schema: dict[str, Any], *, root: dict[str, Any] | None = None, path: str = "$") -> None:
    """Validate ``value`` against a JSON-Schema subset: ``type`` (object, array, string,
    number, integer, boolean), ``properties``, ``required``, ``additionalProperties`` (bool or
    schema), ``items``, ``enum``, ``minimum``, ``maximum`` and local ``$ref`` (``#/$defs/...``).

    Raises
    ------
    ValueError
        Naming the path (``$.model.hit101...``) and the offending value.
    """
    root = schema if root is None else root
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        validate_json(value, node, root=root, path=path)
    t = schema.get("type")
    if t in ("number", "integer"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (t == "number" or float(value).is_integer())
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{path}: expected a finite {t}, got {value!r}")
        if "minimum" in schema and value < schema["minimum"] - 1e-12:
            raise ValueError(f"{path}: {value!r} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"] + 1e-12:
            raise ValueError(f"{path}: {value!r} is above the maximum {schema['maximum']}")
    elif t is not None and not isinstance(value, _TYPES[t]):
        raise ValueError(f"{path}: expected {t}, got {type(value).__name__} {str(value)[:80]!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                validate_json(v, props[k], root=root, path=f"{path}.{k}")
            elif extra is False:
                raise ValueError(f"{path}: undeclared key {k!r}")
            elif isinstance(extra, dict):
                validate_json(v, extra, root=root, path=f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for j, v in enumerate(value):
            validate_json(v, schema["items"], root=root, path=f"{path}[{j}]")


def validate_metrics(result: dict[str, Any]) -> None:
    """Check a metrics dictionary (``reports/<run>/metrics.json``) against ``schemas/reports/metrics.json``.

    Raises
    ------
    ValueError
        Naming the first offending key path and value.
    """
    validate_json(json.loads(json.dumps(result)), metrics_schema())
