"""The record format: which fields a run's ``record.json`` has, and their types.

Checked when a record is read (``report``, resume), so a hand-edited or truncated record
stops with one line naming the file and the field instead of a wrong table.  Bump
:data:`SCHEMA_VERSION` only when the format changes; a record of another version is
refused with a message saying how to redo it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clusterbench.errors import RecordError

SCHEMA_VERSION = 1
REQUIRED_KEYS = {
    "schema_version": int,
    "run_id": str,
    "status": str,
    "method": str,
    "dataset": dict,
    "seed": int,
    "budget": dict,
    "params": dict,
}
STATUSES = ("done", "partial", "failed")  # partial: some protocols scored, the others failed (protocol_errors)


#: the range of each metric a record may hold (ARI is at least -1, in practice above -0.5)
METRIC_RANGES = {"acc": (0.0, 1.0), "nmi": (0.0, 1.0), "accuracy": (0.0, 1.0), "ari": (-1.0, 1.0)}


def _number(value: Any) -> bool:
    """An int or float, not a bool (``acc: true`` is a hand edit, not a score)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: protocol fields that are words, not numbers (the linear protocols': ``trained_on="train"``, ``probe``)
TEXT_FIELDS = ("trained_on", "probe")


def validate_record(rec: Any, source: str) -> dict[str, Any]:
    """Check a loaded record's shape; raise RecordError naming the file and the problem."""
    if not isinstance(rec, dict):
        raise RecordError(f"{source}: a record must be a JSON object, got {type(rec).__name__}")
    version = rec.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(
            f"{source}: record format version {version!r} is not supported (this clusterbench reads "
            f"version {SCHEMA_VERSION}); rerun the cell with --force or remove the file"
        )
    for key, typ in REQUIRED_KEYS.items():
        if key not in rec:
            raise RecordError(f"{source}: missing field {key!r}")
        if not isinstance(rec[key], typ) or (typ is int and isinstance(rec[key], bool)):
            raise RecordError(f"{source}: field {key!r} should be {typ.__name__}, got {type(rec[key]).__name__}")
    if rec["status"] not in STATUSES:
        raise RecordError(f"{source}: status {rec['status']!r} is not one of {STATUSES}")
    if rec["status"] in ("done", "partial"):
        protocols = rec.get("protocols")
        if not isinstance(protocols, dict) or not protocols:
            raise RecordError(f"{source}: a finished record needs a non-empty 'protocols' object")
        for proto, metrics in protocols.items():
            if not isinstance(metrics, dict):
                raise RecordError(f"{source}: protocols.{proto} should be an object")
            for name, value in metrics.items():
                if value is None:
                    continue
                if name in METRIC_RANGES:  # a score: a number (not true/false) in its range
                    low, high = METRIC_RANGES[name]
                    if not _number(value):
                        raise RecordError(f"{source}: protocols.{proto}.{name} should be a number, got {value!r}")
                    if not low <= value <= high:
                        raise RecordError(f"{source}: protocols.{proto}.{name}={value} is outside [{low:g}, {high:g}]")
                elif not isinstance(value, (int, float)) and not (name in TEXT_FIELDS and isinstance(value, str)):
                    raise RecordError(f"{source}: protocols.{proto}.{name} should be a number, got {value!r}")
    if "dataset" in rec and "name" not in rec["dataset"]:
        raise RecordError(f"{source}: dataset.name is missing")
    _validate_optional(rec, source)
    return rec


OPTIONAL_KEYS = {  # fields reports read: absent or null is fine, another type is not
    "method_spec": str, "primary_protocol": str, "cost": dict, "env": dict, "engine": dict, "stats": dict,
    "curve": list, "error": dict, "protocols_requested": list, "labels": dict, "protocol_errors": dict,
    "setting": dict,
}


def _validate_optional(rec: dict[str, Any], source: str) -> None:
    for key, typ in OPTIONAL_KEYS.items():
        if rec.get(key) is not None and not isinstance(rec[key], typ):
            raise RecordError(f"{source}: field {key!r} should be {typ.__name__}, got {type(rec[key]).__name__}")
    ds = rec["dataset"]
    if not isinstance(ds["name"], str) or not ds["name"]:
        raise RecordError(f"{source}: dataset.name should be a non-empty string, got {ds['name']!r}")
    for key, typ in (("options", dict), ("io_options", dict), ("digest", str)):
        if ds.get(key) is not None and not isinstance(ds[key], typ):
            raise RecordError(f"{source}: dataset.{key} should be {typ.__name__}, got {type(ds[key]).__name__}")
    for key, value in rec["budget"].items():
        if not _number(value):
            raise RecordError(f"{source}: budget.{key} should be a number, got {value!r}")
    for key, value in (rec.get("cost") or {}).items():
        if value is not None and not _number(value):
            raise RecordError(f"{source}: cost.{key} should be a number, got {value!r}")
    for i, point in enumerate(rec.get("curve") or []):
        if not isinstance(point, dict):
            raise RecordError(f"{source}: curve[{i}] should be an object, got {type(point).__name__}")
        for name in ("acc", "nmi", "ari"):
            v, (low, high) = point.get(name), METRIC_RANGES[name]
            if v is not None and (not _number(v) or not low <= v <= high):
                raise RecordError(f"{source}: curve[{i}].{name}={v!r} is not a number in [{low:g}, {high:g}]")


def load_record(path: Path) -> dict[str, Any]:
    """Read and validate one ``record.json``; :class:`RecordError` naming the file otherwise."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return validate_record(rec, str(path))
