"""A store holding only imported profiles (the real LINCS plate fixture), built without Prefect."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.store.schema import write_table
from pipeline.store.paths import Store

LINCS = Path(__file__).resolve().parents[1] / "data" / "profiles_lincs_SQ00015054"


def imported_profile_store(root: Path, *, plates: int = 1) -> Store:
    """Import the LINCS plate (``plates`` copies as plates ``P0``, ``P1``… of sources ``import:labN``)
    joined to the Drug Repurposing Hub, then standardize its compounds and write the graphs, as
    ``cmcl import-profiles`` and ``cmcl compounds`` do (same pipeline functions, no Prefect)."""
    from pipeline.profiles import io as pio
    from pipeline.chem.parents import merge_parents
    from pipeline.chem.standardize import standardize_stream
    from pipeline.chem.graphs import graphs_table
    from pipeline.profiles.imports import compound_records, import_profiles

    st = Store(root)
    table = pio.read_profile_table(LINCS / "SQ00015054_normalized_feature_select.csv.gz")
    cmap, roles = pio.read_compound_map(LINCS / "repurposing_samples_20200324.txt", id_columns=list(table.columns))
    for j in range(plates):
        res = import_profiles(table.assign(Metadata_Plate=f"P{j}"), source=f"import:lab{j}", compound_map=cmap,
                              map_roles=roles)
        write_table(res.profiles, "profiles_imported", st.table_path("profiles_imported", import_id=f"lab{j}"))
    records = compound_records(st.read("profiles_imported"))
    inputs = pd.concat(list(standardize_stream([records], n_jobs=1)), ignore_index=True)
    compounds = merge_parents(inputs)
    write_table(inputs, "compound_inputs", st.table_path("compound_inputs"))
    write_table(compounds, "compounds", st.table_path("compounds"))
    write_table(graphs_table(compounds), "graphs", st.table_path("graphs"))
    return st
