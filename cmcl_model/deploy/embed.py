"""Molecule embeddings of a trained model for any compound file cmcl reads (``cmcl embed``).

Records are read by :func:`pipeline.chem.io.read_compounds` and standardized by
:func:`pipeline.chem.standardize.standardize_table`, exactly as ``cmcl compounds`` does, so a molecule
gets the embedding of the parent the model was trained on. Failures stay in the output with their
reason and a null embedding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = ["EMBEDDING_COLUMNS", "embed_records", "embed_smiles", "embed_file", "write_embeddings"]

#: columns of an embeddings table, in order (``Embedding``: list<float32> of ``proj_dim``, null on failure)
EMBEDDING_COLUMNS = ("Metadata_CompoundID", "Metadata_Source", "Input_SMILES", "Metadata_InChIKey", "Metadata_SMILES",
                     "Status", "Error", "Embedding")


def _graph(smiles: str):
    from torch_geometric.data import Data

    from pipeline.chem.graphs import smiles_to_graph

    g = smiles_to_graph(smiles)
    return Data(x=torch.from_numpy(np.asarray(g["node_feat"], dtype=np.int64)),
                edge_index=torch.from_numpy(np.asarray(g["edge_index"], dtype=np.int64)),
                edge_attr=torch.from_numpy(np.asarray(g["edge_feat"], dtype=np.int64)), num_nodes=int(g["num_nodes"]))


@torch.no_grad()
def embed_records(model, records: pd.DataFrame, *, batch_size: int = 256,
                  device: torch.device | str = "cpu") -> pd.DataFrame:
    """Standardize reader records and embed their parents with ``model.embed_graphs``.

    Parameters
    ----------
    model : CMCLModel
        In eval mode (as :func:`cmcl_model.deploy.export.load_encoder` returns it).
    records : pandas.DataFrame
        Columns of :data:`pipeline.chem.io.READER_COLUMNS` (``Error`` optional).
    batch_size : int
        Molecules per forward pass.

    Returns
    -------
    pandas.DataFrame
        One row per record, in order, with :data:`EMBEDDING_COLUMNS`; ``Embedding`` is a
        (proj_dim,) float32 array, or None where ``Status`` is 'failed' (``Error`` says why).
    """
    from torch_geometric.data import Batch

    from pipeline.chem.standardize import standardize_table
    from pipeline.chem.graphs import GraphError

    out = standardize_table(records).reset_index(drop=True)
    graphs, rows = [], []
    for r, (status, smi) in enumerate(zip(out["Status"], out["Metadata_SMILES"])):
        if status != "ok":
            continue
        try:
            graphs.append(_graph(smi))
            rows.append(r)
        except GraphError as exc:
            out.loc[r, ["Status", "Error"]] = ["failed", f"graph: {exc}"]
    emb: list[np.ndarray | None] = [None] * len(out)
    model = model.to(device).eval()
    for a in range(0, len(graphs), batch_size):
        batch = Batch.from_data_list(graphs[a:a + batch_size]).to(device)
        vecs = model.embed_graphs(batch).float().cpu().numpy()
        for r, v in zip(rows[a:a + batch_size], vecs):
            emb[r] = v
    out["Embedding"] = emb
    if len(out) != len(records):
        raise RuntimeError(f"embedding lost rows: {len(records)} records in, {len(out)} out")
    return out[list(EMBEDDING_COLUMNS)]


def embed_smiles(model, smiles: Sequence[str], *, ids: Sequence[str] | None = None, **kwargs) -> pd.DataFrame:
    """:func:`embed_records` of a list of SMILES (ids default to their 1-based position)."""
    ids = list(ids) if ids is not None else [str(k + 1) for k in range(len(smiles))]
    if len(ids) != len(smiles):
        raise ValueError(f"{len(ids)} ids for {len(smiles)} SMILES")
    records = pd.DataFrame({"Metadata_Source": "smiles", "Metadata_CompoundID": ids, "Input_SMILES": list(smiles),
                            "Error": None})
    return embed_records(model, records, **kwargs)


def embed_file(model, path: str | os.PathLike, *, smiles_col: str = "smiles", id_col: str | None = None,
               batch_size: int = 256, device: torch.device | str = "cpu") -> pd.DataFrame:
    """:func:`embed_records` of every record of a CSV/TSV/.smi/SDF/Parquet file, chunk by chunk.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`pipeline.chem.io.read_compounds` (missing file, unknown format or column).
    """
    from pipeline.chem.io import read_compounds

    parts = [embed_records(model, chunk, batch_size=batch_size, device=device)
             for chunk in read_compounds(path, smiles_col=smiles_col, id_col=id_col)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EMBEDDING_COLUMNS})
    return pd.concat(parts, ignore_index=True)


def write_embeddings(table: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Validate an embeddings table against ``schemas/tables/embeddings.json`` and write it to
    Parquet atomically (``Embedding`` as list<float32>); returns the path."""
    from pipeline.store.schema import write_table

    frame = table.copy()
    frame["Embedding"] = [None if v is None else np.asarray(v, dtype=np.float32) for v in frame["Embedding"]]
    return write_table(frame, "embeddings", out)
