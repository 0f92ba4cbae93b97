"""A run's ledger events as one columnar, compressed table: ``events.parquet``.

A year of hourly wake-ups is hundreds of thousands of events (78 MB of JSON lines for the
paper's study). Parquet keeps them typed, column by column, compressed (zstd), so that a
report reads only the columns it draws (say ``kind``, ``end_s``, ``energy_pj``) and only the
kinds it needs, in a fraction of a second.

One row per event, tagged with its ``variant`` and ``seed`` (index), in the order of the run
folder (variant, seed, then ``seq``). Every top-level field of an event is a column of its
own; each key of its ``detail`` mapping is a column ``detail.<key>`` (null where an event has
no such key). A column's type is read off its values: booleans, integers, floats, strings;
a key whose values mix types or hold lists or mappings is stored as JSON text.
:func:`read_events` gives them back as a pandas DataFrame (``detail.*`` columns as they are;
:func:`event_records` rebuilds the dicts).

Nothing here knows what the fields mean: their names are the ledger's
(:mod:`controller.firmware.ledger`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

EVENTS_FILE = "events.parquet"
#: The events file of run folders written before ``events.parquet`` (JSON lines).
EVENTS_JSONL = "events.jsonl"
DETAIL_PREFIX = "detail."
COMPRESSION = "zstd"
#: Columns that are in every file, first, in this order.
TAGS = ("variant", "seed")


def _arrow_type(values: Sequence[Any]) -> pa.DataType | None:
    """The column type for ``values`` (None: store as JSON text)."""
    seen = {type(v) for v in values if v is not None}
    if not seen:
        return pa.float64()
    if seen == {bool}:
        return pa.bool_()
    if seen == {int}:
        return pa.int64()
    if seen <= {int, float}:
        return pa.float64()
    if seen == {str}:
        return pa.string()
    return None


def _column(values: list[Any]) -> pa.Array:
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    kind = _arrow_type(values)
    if kind is None:
        text = [None if v is None else json.dumps(v, sort_keys=True, default=str) for v in values]
        return pa.array(text, pa.string())
    if kind == pa.float64():
        values = [None if v is None else float(v) for v in values]
    return pa.array(values, kind)


def events_table(tagged: Iterable[tuple[str, int, dict[str, Any]]]) -> pa.Table:
    """The table of ``(variant, seed index, event dict)`` triples, in the order given."""
    variants: list[Any] = []
    seeds: list[int] = []
    sparse: dict[str, tuple[list[int], list[Any]]] = {}  # column -> (rows, values)
    for i, (variant, seed, ev) in enumerate(tagged):
        variants.append(variant)
        seeds.append(int(seed))
        for key, value in ev.items():
            if key == "detail" and isinstance(value, dict):
                for dk, dv in value.items():
                    rows, values = sparse.setdefault(DETAIL_PREFIX + str(dk), ([], []))
                    rows.append(i)
                    values.append(dv)
            else:
                rows, values = sparse.setdefault(str(key), ([], []))
                rows.append(i)
                values.append(value)
    n = len(variants)
    columns: dict[str, list[Any]] = {"variant": variants, "seed": seeds}
    for name, (rows, values) in sparse.items():
        if len(rows) == n:
            columns[name] = values
            continue
        full: list[Any] = [None] * n  # keys an event did not have
        for i, v in zip(rows, values, strict=True):
            full[i] = v
        columns[name] = full
    arrays = {name: _column(values) for name, values in columns.items()}
    arrays["variant"] = arrays["variant"].dictionary_encode()
    if "kind" in arrays:
        arrays["kind"] = arrays["kind"].dictionary_encode()
    return pa.table(arrays)


def write_events(path: Path, tagged: Iterable[tuple[str, int, dict[str, Any]]]) -> Path:
    """Write ``events.parquet`` (zstd, dictionary-encoded strings) atomically (a reader sees
    the old file or the whole new one); the same events give the same bytes."""
    table = events_table(tagged)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, compression=COMPRESSION, use_dictionary=True,
                       write_statistics=True, row_group_size=256 * 1024)  # fmt: skip
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def events_path(run_dir: Path) -> Path | None:
    """The events file of a run folder (Parquet, or the JSON lines of older folders)."""
    for name in (EVENTS_FILE, EVENTS_JSONL):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def _jsonl_frame(path: Path) -> pd.DataFrame:
    with open(path, encoding="utf-8") as f:
        table = events_table(
            (ev.pop("variant"), ev.pop("seed"), ev) for ev in map(json.loads, f) if ev
        )
    return table.to_pandas()


def read_events(
    path: Path, columns: Sequence[str] | None = None, kinds: Sequence[str] | None = None
) -> pd.DataFrame:
    """The events of ``path`` (``events.parquet``, or an older ``events.jsonl``) as a
    DataFrame: only ``columns`` (all if None; absent ones are left out) and only events of
    ``kinds`` (all if None). String columns come back as pandas categoricals."""
    path = Path(path)
    if path.suffix == ".jsonl":
        frame = _jsonl_frame(path)
        if kinds is not None:
            frame = frame[frame["kind"].isin(list(kinds))]
        if columns is not None:
            frame = frame[[c for c in columns if c in frame.columns]]
        return frame.reset_index(drop=True)
    schema = pq.read_schema(path)
    wanted = None if columns is None else [c for c in columns if c in schema.names]
    filters = None
    if kinds is not None:
        if not kinds:
            return pd.DataFrame(columns=wanted or schema.names)
        filters = [("kind", "in", list(kinds))]
    table = pq.read_table(path, columns=wanted, filters=filters)
    return table.to_pandas()


def event_records(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """The events of a :func:`read_events` frame as dicts again (``detail`` rebuilt from the
    ``detail.*`` columns; a key missing from an event is missing from its ``detail``)."""
    detail_cols = [c for c in frame.columns if c.startswith(DETAIL_PREFIX)]
    plain = [c for c in frame.columns if not c.startswith(DETAIL_PREFIX)]
    for row in frame.to_dict("records"):
        out = {c: _plain(row[c]) for c in plain}
        detail = {}
        for c in detail_cols:
            v = _plain(row[c])
            if v is not None:
                detail[c[len(DETAIL_PREFIX) :]] = v
        out["detail"] = detail
        yield out


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v
