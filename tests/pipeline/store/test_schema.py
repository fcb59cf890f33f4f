import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.store.schema import SchemaError, arrow_schema, conform, store_layout, table_names, table_schema, write_table


def test_every_declared_table_has_described_typed_columns():
    assert {"cells", "fields", "platemap", "quarantine", "ledger", "compounds", "compound_inputs", "graphs"} <= set(table_names())
    for name in table_names():
        t = table_schema(name)
        assert t["description"] and t["path"].startswith("tables/")
        for c in t["columns"]:
            assert c["description"], (name, c["name"])
        arrow_schema(name)  # every type is known
    paths = store_layout()["paths"]
    for name in table_names():
        assert paths[name]["path"] == table_schema(name)["path"]


def _quarantine_row(**over):
    row = dict(Metadata_Plate="P", Metadata_Well="A01", Metadata_Site=1, Metadata_Channel="DNA", File="f.tif", Reason="r")
    row.update(over)
    return row


def test_conform_casts_and_rejects():
    t = conform(pd.DataFrame([_quarantine_row(Metadata_Site=None)]), "quarantine")
    assert t.schema.field("Metadata_Site").type == "int32"
    with pytest.raises(SchemaError, match="missing columns"):
        conform(pd.DataFrame([{"Metadata_Plate": "P"}]), "quarantine")
    with pytest.raises(SchemaError, match="undeclared"):
        conform(pd.DataFrame([_quarantine_row(extra=1)]), "quarantine")
    with pytest.raises(SchemaError, match="null value"):
        conform(pd.DataFrame([_quarantine_row(File=None)]), "quarantine")
    with pytest.raises(SchemaError, match="cannot store"):
        conform(pd.DataFrame([_quarantine_row(Metadata_Site="one")]), "quarantine")


def test_write_table_is_atomic_and_replaces(tmp_path):
    p = tmp_path / "q.parquet"
    write_table(pd.DataFrame([_quarantine_row()] * 3), "quarantine", p)
    write_table(pd.DataFrame([_quarantine_row()]), "quarantine", p)
    assert pq.read_table(p).num_rows == 1
    assert [f.name for f in tmp_path.iterdir()] == ["q.parquet"]  # no temporary left behind
    with pytest.raises(SchemaError):
        write_table(pd.DataFrame([{"x": 1}]), "quarantine", p)
    assert pq.read_table(p).num_rows == 1  # a failed write leaves the old table intact
    json.dumps(store_layout())


def test_read_a_projection_of_a_table(tmp_path):
    import pandas as pd
    import pytest

    from pipeline.store.schema import SchemaError, read_table, table_schema, write_table

    cols = [c["name"] for c in table_schema("tiles")["columns"]]
    df = pd.DataFrame({c: [1, 2] for c in cols})
    df["Metadata_Plate"], df["Metadata_Well"] = "P1", ["A01", "B02"]
    path = write_table(df, "tiles", tmp_path / "t.parquet")
    sub = read_table("tiles", path, ["Metadata_Well", "Metadata_TileIndex"])
    assert list(sub.columns) == ["Metadata_Well", "Metadata_TileIndex"]
    assert sub["Metadata_TileIndex"].dtype == "int64" and list(sub["Metadata_Well"]) == ["A01", "B02"]
    with pytest.raises(SchemaError, match="not declared"):
        read_table("tiles", path, ["Metadata_Well", "Nope"])


def test_reading_a_table_while_another_process_replaces_it(tmp_path):
    """Parallel ingestion updates the ledger (write to a temporary file, then os.replace) while
    other plates read it: a read must see either the old or the new file, never the old footer
    with the new pages (pyarrow opened a path twice: ~2 % of reads failed here)."""
    import threading

    from pipeline.store.schema import read_table, write_table

    path = tmp_path / "ledger.parquet"

    def ledger(n):
        return pd.DataFrame({"Metadata_Plate": [f"P{i:04d}" for i in range(n)], "Source": ["/data/in"] * n,
                             "Fingerprint": ["f" * 40] * n, "Status": ["complete"] * n, "Layout": ["phenix"] * n,
                             "N_Fields": [9] * n, "N_Quarantined": [0] * n, "N_Cells": [3000] * n,
                             "Error": [None] * n, "UpdatedAt": ["2026-12-02T11:40:00+00:00"] * n})

    write_table(ledger(1), "ledger", path)
    stop = threading.Event()

    def rewrite():
        k = 0
        while not stop.is_set():
            write_table(ledger(1 + (k % 40) * 7), "ledger", path)
            k += 1

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        sizes = {len(read_table("ledger", path)) for _ in range(400)}
    finally:
        stop.set()
        writer.join()
    assert len(sizes) > 1  # the file really changed under the reads
