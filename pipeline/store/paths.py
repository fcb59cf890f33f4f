"""Paths inside a cmcl store, as declared in ``schemas/store.json``.

A store is one directory. :class:`Store` turns the declared path templates into concrete paths so
no module spells a store path by hand.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.store.schema import read_table, store_layout, table_schema

__all__ = ["Store", "default_store_path", "CHANNELS"]

#: Cell Painting channels in their conventional order.
CHANNELS: tuple[str, ...] = ("DNA", "ER", "RNA", "AGP", "Mito")


def default_store_path() -> Path:
    """``$CMCL_STORE`` if set, else ``./cmcl-store`` (read at call time, never at import)."""
    return Path(os.environ.get("CMCL_STORE", "cmcl-store"))


@dataclass(frozen=True)
class Store:
    """A cmcl store rooted at ``root``.

    Examples
    --------
    >>> Store(Path("s")).table_path("cells", plate="P1")
    PosixPath('s/tables/cells/P1.parquet')
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, store: "Store | str | os.PathLike[str]") -> "Store":
        """``store`` itself when it is a :class:`Store`, else the store rooted at that path: library
        functions take a ``Store`` and still accept the path a script passes."""
        return store if isinstance(store, Store) else cls(Path(store))

    def path(self, key: str, **fields: str) -> Path:
        """Concrete path for entry ``key`` of the store layout, formatting ``{plate}`` etc."""
        template = store_layout()["paths"][key]["path"]
        return self.root / template.format(**fields)

    def table_path(self, name: str, **fields: str) -> Path:
        """Path of table ``name`` (for per-plate tables pass ``plate=``)."""
        return self.root / table_schema(name)["path"].format(**fields)

    def table_files(self, name: str) -> list[Path]:
        """All existing Parquet files of table ``name`` (one per plate for per-plate tables; one per
        import for ``profiles_imported``: every ``{field}`` of the path matches any name)."""
        pattern = str(self.root / re.sub(r"\{\w+\}", "*", table_schema(name)["path"]))
        return [Path(p) for p in sorted(glob.glob(pattern))]

    def read(self, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """All rows of table ``name`` across its files, validated; empty frame if none exist.

        ``columns``: read only these declared columns (in this order).
        """
        parts = [read_table(name, p, columns) for p in self.table_files(name)]
        if not parts:
            from pipeline.store.schema import arrow_schema

            return arrow_schema(name, columns).empty_table().to_pandas()
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]

    def plate_zarr(self, plate: str) -> Path:
        return self.path("plates", plate=plate)

    def illumination_zarr(self, plate: str) -> Path:
        return self.path("illumination", plate=plate)

    def crops_zarr(self, plate: str) -> Path:
        return self.path("crops", plate=plate)

    def illumination_qc_dir(self, plate: str) -> Path:
        """Folder of the plate's illumination QC PNGs (one per channel)."""
        return self.path("illumination_qc", plate=plate, channel="-").parent

    def staging_dir(self, plate: str) -> Path:
        """Where a plate's outputs are written while it is ingested (moved into place when complete)."""
        return self.path("staging", plate=plate)

    def lock_path(self, name: str) -> Path:
        """Lock file ``name`` (a plate ID, or ``'ledger'``)."""
        return self.path("lock", name=name)

    def run_dir(self, run: str) -> Path:
        return self.path("runs", run=run)

    def run_config(self, run: str) -> Path:
        """The run's ``config.json``."""
        return self.path("run_config", run=run)

    def run_metrics(self, run: str) -> Path:
        """The run's ``metrics.jsonl`` (one line per epoch)."""
        return self.path("run_metrics", run=run)

    def checkpoint(self, run: str, which: str = "best") -> Path:
        """The run's checkpoint ``which`` (``'best'`` or ``'last'``)."""
        return self.path("checkpoint", run=run, which=which)

    def has_run(self, run: str) -> bool:
        """Whether ``run`` is a training run of this store: its folder holds the checkpoints
        folder (:meth:`checkpoint`'s), which training makes before its first epoch ends."""
        return self.checkpoint(run).parent.is_dir()

    def report_dir(self, run: str) -> Path:
        return self.path("reports", run=run)

    @property
    def inbox(self) -> Path:
        return self.path("inbox")

    def runs(self) -> list[str]:
        """Run ids present in the store, oldest first (run ids sort by time)."""
        d = self.root / "runs"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []
