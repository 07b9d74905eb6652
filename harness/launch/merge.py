"""``clusterbench merge A B ... -o DIR``: join results directories (shards, machines) into one.

Every run directory with a record is copied (record, labels, anything else it holds but
locks, heartbeats and temp files), labels before the record as the store writes them.  Two
copies of one run id must be the same result (status, metrics, labels); a finished copy wins
over a failed one.  Any other difference refuses the whole merge with one line, before
anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clusterbench.errors import ConfigError
from clusterbench.launch.heartbeat import HEARTBEAT
from clusterbench.results.io import atomic_write_bytes, canonical_json, is_temp_file
from clusterbench.results.store import ResultsStore

SKIP = (".lock", HEARTBEAT)


def _same_result(store_a: ResultsStore, a: dict[str, Any], store_b: ResultsStore, b: dict[str, Any]) -> bool:
    """What two copies of one run must agree on: status, metrics and the labels' values (not their
    bytes: the store writes the narrowest integer type now, int32 before)."""
    if canonical_json([a["status"], a.get("protocols")]) != canonical_json([b["status"], b.get("protocols")]):
        return False
    sha_a, sha_b = ((r.get("labels") or {}).get("sha256") for r in (a, b))
    if sha_a == sha_b:
        return True
    if sha_a is None or sha_b is None:
        return False
    return np.array_equal(store_a.load_labels(a), store_b.load_labels(b))


def _usable(store: ResultsStore, rec: dict[str, Any]) -> bool:
    """A failed record, or a finished one beside the labels it vouches for."""
    return rec["status"] == "failed" or store.finished(rec["run_id"]) is not None


def merge_results(sources: Sequence[str | Path], output: str | Path) -> str:
    """Merge ``sources`` into ``output`` (created if needed, its own records included); a summary line."""
    stores = [ResultsStore(s, create=False) for s in sources]
    out_dir = Path(output)
    chosen: dict[str, tuple[ResultsStore, dict[str, Any]]] = {}
    existing = ResultsStore(out_dir, create=False) if (out_dir / ".clusterbench-results").exists() else None
    for store in ([existing] if existing else []) + stores:
        for rec in store.iter_records(strict=True):  # an invalid record: one line naming the file
            rid = rec["run_id"]
            if not _usable(store, rec):
                continue
            if rid not in chosen or (chosen[rid][1]["status"] == "failed" and rec["status"] == "done"):
                chosen[rid] = (store, rec)
            elif rec["status"] == chosen[rid][1]["status"] and not _same_result(*chosen[rid], store, rec):
                raise ConfigError(f"run {rid} differs between {chosen[rid][0].root} and {store.root} "
                                  "(other metrics or labels); merge refused, nothing written")
    target = ResultsStore(out_dir)
    copied = 0
    for rid, (store, rec) in sorted(chosen.items()):
        if store is existing or (target.finished(rid) is not None and rec["status"] == "failed"):
            continue
        src, dst = store.run_dir(rid), target.run_dir(rid)
        files = [p for p in sorted(src.iterdir()) if p.is_file() and p.name not in SKIP and not is_temp_file(p)]
        for p in sorted(files, key=lambda p: p.name == "record.json"):  # the record last: it marks the run done
            atomic_write_bytes(dst / p.name, p.read_bytes())
        copied += 1
    return f"merged {copied} run(s) from {len(stores)} director{'y' if len(stores) == 1 else 'ies'} into {out_dir}"
