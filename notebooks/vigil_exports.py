"""vigil's analytics exports, registered as SQL tables for the analyst notebooks.

The exports are hive-partitioned Parquet written by `vigil run` / `vigil export`:
`<exports>/<table>/geography=<g>/day=<YYYY-MM-DD>/part-0.parquet`. They hold metadata only
(IDs, times, scores, categories, codes), never a prompt, a completion, the LLM's rationale
or a reviewer's note; this module reads nothing else, so neither do the notebooks.

`connect()` registers every table with DataFusion (the engine `vigil sql` runs), adding the
partition columns `geography` and `day` (text) from the paths. A table with no export yet
(a fresh install, no human decisions so far) is registered empty with its schema, so every
query still runs and returns no rows; `nothing_to_show()` turns that into a printed
message instead of an empty chart.

`SCHEMAS` mirrors the file schemas in `analytics/src/table.rs` (and the `decisions` table).
A table that is exported but lacks one of these columns fails at `connect()`, naming the
column, so a rename on the Rust side cannot go unnoticed in the notebook test run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
from datafusion import SessionContext

#: Where the exports are when `VIGIL_EXPORTS` is not set: the repository's `var/exports`.
DEFAULT_EXPORTS = Path(__file__).resolve().parent.parent / "var" / "exports"

#: The hive partition columns of every table, in directory order.
PARTITION_COLUMNS = [("geography", pa.string()), ("day", pa.string())]

#: The classifier's harm categories: one score column each in `detections`.
CATEGORIES = ["hate", "harassment", "sexual", "violence", "self_harm", "illegal", "jailbreak"]

_TS = pa.timestamp("us", tz="UTC")
_TEXTS = pa.list_(pa.field("item", pa.string()))


def _schema(*columns: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, kind) for name, kind in columns])


#: File schemas of the tables (partition columns excluded).
SCHEMAS: dict[str, pa.Schema] = {
    "records": _schema(
        ("resource_id", pa.string()), ("request_id", pa.string()), ("end_user", pa.string()),
        ("event_time", _TS), ("stored_at", _TS), ("deployment", pa.string()),
        ("processed_in", pa.string()), ("operation", pa.string()), ("model", pa.string()),
        ("content_stored", pa.bool_()),
    ),
    "detections": _schema(
        ("resource_id", pa.string()), ("request_id", pa.string()), ("stored_at", _TS),
        ("harmful", pa.bool_()), ("any_harm", pa.float32()),
        *[(c, pa.float32()) for c in CATEGORIES],
        ("classifier_model", pa.string()),
    ),
    "cases": _schema(
        ("case_id", pa.string()), ("opened_at", _TS), ("resource_id", pa.string()),
        ("subject", pa.string()), ("end_user", pa.string()), ("window_start", _TS),
        ("window_end", _TS), ("abuse_score", pa.float32()), ("categories", _TEXTS),
        *[(c, pa.uint32()) for c in ("records", "harmful", "previous_harmful",
                                      "near_duplicates", "template_hits", "escalations")],
        *[(c, pa.float32()) for c in ("frequency", "severity", "intent", "trend")],
        ("pattern_families", _TEXTS), ("sample_size", pa.uint32()),
        ("sample_request_ids", _TEXTS), ("policy_version", pa.string()),
        ("flag_id", pa.string()), ("flag_published", pa.bool_()),
    ),
    "verdicts": _schema(
        ("case_id", pa.string()), ("request_id", pa.string()), ("resource_id", pa.string()),
        ("reviewed_at", _TS), ("route", pa.string()), ("reason", pa.string()),
        ("violation", pa.bool_()), ("categories", _TEXTS), ("severity", pa.string()),
        ("confidence", pa.float32()), ("model", pa.string()), ("policy_version", pa.string()),
        ("attempts", pa.uint32()), ("in_flight", pa.bool_()),
    ),
    "audit": _schema(
        ("seq", pa.uint64()), ("at", _TS), ("actor", pa.string()), ("role", pa.string()),
        ("action", pa.string()), ("outcome", pa.string()), ("reason", pa.string()),
        ("case_id", pa.string()), ("request_id", pa.string()), ("resource_id", pa.string()),
        ("access_request", pa.string()), ("workstation", pa.string()),
    ),
    "decisions": _schema(
        ("decision_id", pa.string()), ("case_id", pa.string()), ("request_id", pa.string()),
        ("resource_id", pa.string()), ("reviewer", pa.string()), ("decision", pa.string()),
        ("decided_at", _TS), ("access_request", pa.string()),
    ),
}


def exports_dir(path: str | os.PathLike | None = None) -> Path:
    """The export directory: `path`, else `$VIGIL_EXPORTS`, else the repository's `var/exports`."""
    chosen = path or os.environ.get("VIGIL_EXPORTS") or DEFAULT_EXPORTS
    return Path(chosen).expanduser().resolve()


def partition_files(table_dir: Path) -> list[Path]:
    """A table's partition files (hidden files, such as a write in progress, left out)."""
    return sorted(
        p for p in table_dir.glob("geography=*/day=*/*.parquet") if not p.name.startswith(".")
    )


class Exports:
    """The exported tables of one export directory, queryable with SQL."""

    def __init__(self, root: Path):
        self.root = root
        self.ctx = SessionContext()
        #: Table name -> number of partition files (0: registered empty).
        self.files: dict[str, int] = {}
        for name, schema in SCHEMAS.items():
            files = partition_files(root / name)
            self.files[name] = len(files)
            if files:
                self.ctx.register_parquet(
                    name, str(root / name), table_partition_cols=PARTITION_COLUMNS,
                    file_extension=".parquet",
                )
                self._check_columns(name, schema)
            else:
                empty = schema
                for column, kind in PARTITION_COLUMNS:
                    empty = empty.append(pa.field(column, kind))
                self.ctx.register_record_batches(
                    name, [[pa.RecordBatch.from_pylist([], schema=empty)]]
                )

    def _check_columns(self, name: str, schema: pa.Schema) -> None:
        exported = set(self.ctx.table(name).schema().names)
        missing = [c for c in schema.names if c not in exported]
        if missing:
            raise RuntimeError(
                f"the exported {name!r} table under {self.root} has no column(s) {missing}; "
                "the notebooks expect the schema in notebooks/vigil_exports.py (SCHEMAS)"
            )

    def sql(self, query: str) -> pd.DataFrame:
        """Runs one SQL query (DataFusion dialect) and returns the result as a DataFrame."""
        return self.ctx.sql(query).to_pandas()

    def view(self, name: str, query: str) -> None:
        """Registers `query` as a view that later queries can name like a table."""
        self.ctx.register_view(name, self.ctx.sql(query))

    def summary(self) -> pd.DataFrame:
        """One line per table: partition files, rows, geographies and days."""
        lines = []
        for name in SCHEMAS:
            stats = self.sql(
                f"SELECT count(*) AS n, count(DISTINCT geography) AS g, min(day) AS first, "
                f"max(day) AS last FROM {name}"
            ).iloc[0]
            lines.append({
                "table": name, "files": self.files[name], "rows": int(stats["n"]),
                "geographies": int(stats["g"]),
                "days": f"{stats['first']} .. {stats['last']}" if stats["n"] else "",
            })
        return pd.DataFrame(lines).set_index("table")


def connect(path: str | os.PathLike | None = None) -> Exports:
    """Registers the tables of the export directory (see `exports_dir`) and says what it found."""
    root = exports_dir(path)
    exports = Exports(root)
    if not root.is_dir():
        print(f"No export directory at {root}: run `vigil run` or `vigil export` first, "
              "or point VIGIL_EXPORTS at one. Every table is empty.")
    else:
        absent = [name for name, n in exports.files.items() if n == 0]
        print(f"Exports: {root}")
        if absent:
            print(f"Not exported yet (empty here): {', '.join(absent)}")
    return exports


def nothing_to_show(frame: pd.DataFrame, what: str) -> bool:
    """True, after printing why, when `frame` has no rows; the caller then skips its chart."""
    if len(frame):
        return False
    print(f"Nothing to show: {what}.")
    return True


def sql_list(values) -> str:
    """`values` as a SQL list of string literals, for `IN (...)`: `('a', 'b')`."""
    quoted = ["'" + str(v).replace("'", "''") + "'" for v in values]
    return "(" + ", ".join(quoted or ["NULL"]) + ")"
