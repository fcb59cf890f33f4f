"""A store holding only imported profiles (the real LINCS plate fixture), built without Prefect."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.schema import write_table
from pipeline.store import Store

LINCS = Path(__file__).resolve().parents[1] / "data" / "profiles_lincs_SQ00015054"


def imported_profile_store(root: Path, *, plates: int = 1) -> Store:
    """Import the LINCS plate (``plates`` copies as plates ``P0``, ``P1``… of sources ``import:labN``),
    then standardize its compounds and write the graphs, as ``cmcl import-profiles`` and
    ``cmcl compounds`` do."""
    from pipeline.compounds import merge_parents, standardize_stream
    from pipeline.graphs import graphs_table
    from pipeline.profiles import external_profiles

    st = Store(root)
    table = pd.read_csv(LINCS / "SQ00015054_normalized_feature_select.csv.gz")
    samples = pd.read_csv(LINCS / "repurposing_samples_20200324.txt", sep="\t", comment="!")
    for j in range(plates):
        wells = external_profiles(table.assign(Metadata_Plate=f"P{j}"), source=f"import:lab{j}", samples=samples)
        write_table(wells, "profiles_wells", st.table_path("profiles_wells", plate=f"P{j}"))
    trt = wells[(wells["Metadata_ControlType"] == "trt") & wells["Metadata_SMILES"].notna()]
    trt = trt.drop_duplicates("Metadata_CompoundID")
    records = pd.DataFrame({"Metadata_Source": "import:lincs", "Metadata_CompoundID": trt["Metadata_CompoundID"],
                            "Input_SMILES": trt["Metadata_SMILES"], "Error": None}).reset_index(drop=True)
    inputs = pd.concat(list(standardize_stream([records], n_jobs=1)), ignore_index=True)
    compounds = merge_parents(inputs)
    write_table(inputs, "compound_inputs", st.table_path("compound_inputs"))
    write_table(compounds, "compounds", st.table_path("compounds"))
    write_table(graphs_table(compounds), "graphs", st.table_path("graphs"))
    return st
