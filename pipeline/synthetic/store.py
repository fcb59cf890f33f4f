"""A small synthetic cmcl store with a learnable molecule -> phenotype link.

Used by the tests and ``benchmarks/train.py``. Molecules are real (the solubility set shipped in
``cmcl_model/datasets/``); crops are noise plus a nucleus-like blob whose per-channel brightness depends on simple
structural fractions of the molecule (O, N, halogen, aromatic and ring atoms), so a graph
encoder can learn to predict it and retrieval is learnable. Every table is written with
:func:`pipeline.store.schema.write_table`, so it conforms to ``schemas/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.chem.graphs import graphs_table
from pipeline.store.schema import write_table
from pipeline.store.paths import CHANNELS, Store
from pipeline.store.crops import CROPS_CHUNK, CROPS_SHARD, CropArrayWriter

__all__ = ["structure_signal", "make_synthetic_store"]

def structure_signal(smiles: str) -> np.ndarray:
    """(5,) fractions of heavy atoms that are O, N, halogen, aromatic, in a ring."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    atoms = list(mol.GetAtoms())
    n = max(1, len(atoms))
    return np.array([
        sum(a.GetSymbol() == "O" for a in atoms) / n,
        sum(a.GetSymbol() == "N" for a in atoms) / n,
        sum(a.GetSymbol() in ("F", "Cl", "Br", "I") for a in atoms) / n,
        sum(a.GetIsAromatic() for a in atoms) / n,
        sum(a.IsInRing() for a in atoms) / n,
    ])


def _fill_declared(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Add declared columns this generator does not model (zeros / empty strings / False), so
    the synthetic tables keep conforming when ``schemas/`` gains a column."""
    from pipeline.store.schema import table_schema

    defaults = {"string": "", "bool": False}
    for col in table_schema(name)["columns"]:
        if col["name"] not in df.columns:
            t = col["type"]
            df[col["name"]] = [[] for _ in range(len(df))] if t.startswith("list") else defaults.get(t, 0)
    return df


def _write_tiles(store: Store, group, plate: str, cells: pd.DataFrame, crops: np.ndarray) -> None:
    """Field tiles of a synthetic plate: per well, consecutive 2 x 2 mosaics of its crops."""
    S = crops.shape[-1]
    tiles, rows = [], []
    for well, sel in cells.groupby("Metadata_Well", sort=False).indices.items():
        for t in range(len(sel) // 4):
            q = crops[sel[4 * t : 4 * t + 4]]
            tiles.append(np.concatenate([np.concatenate(q[:2], axis=-1), np.concatenate(q[2:], axis=-1)], axis=-2))
            rows.append({"Metadata_Plate": plate, "Metadata_Well": well, "Metadata_Site": 1,
                         "Metadata_TileIndex": len(rows), "Tile_Row": t, "Tile_Col": 0,
                         "Tile_Y0": 2 * S * t, "Tile_X0": 0})
    # as ingestion sizes tile arrays: a quarter of the crop rows per chunk and per shard
    writer = CropArrayWriter(group, "tiles", n_channels=crops.shape[1], size=2 * S,
                             chunk=CROPS_CHUNK // 4, shard=CROPS_SHARD // 4)
    writer.append(np.stack(tiles))
    writer.close()
    group.attrs["tile_size"] = 2 * S
    write_table(_fill_declared(pd.DataFrame(rows), "tiles"), "tiles", store.table_path("tiles", plate=plate))


def _wells(n: int) -> list[str]:
    return [f"{chr(ord('A') + r)}{c:02d}" for r in range(16) for c in range(1, 25)][:n]


def _pick_compounds(n_compounds: int, *, min_rings: int) -> pd.DataFrame:
    """The first ``n_compounds`` distinct molecules of the shipped solubility set with at least
    ``min_rings`` rings and 5 heavy atoms, as ``compounds`` rows plus ``Input_SMILES``.

    Raises
    ------
    ValueError
        If fewer are available.
    """
    from importlib.resources import files

    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
    df = pd.read_csv(files("cmcl_model.datasets").joinpath("solubility.csv").open())
    rows, seen = [], set()
    for smi in df["smiles"]:
        mol = Chem.MolFromSmiles(smi)
        if mol is None or mol.GetRingInfo().NumRings() < min_rings or mol.GetNumHeavyAtoms() < 5:
            continue
        key = Chem.MolToInchiKey(mol)
        if key in seen:
            continue
        seen.add(key)
        rows.append({
            "Metadata_InChIKey": key,
            "Metadata_SMILES": Chem.MolToSmiles(mol),
            "Metadata_InChI": Chem.MolToInchi(mol),
            "Metadata_CompoundIDs": [f"C{len(rows):04d}"],
            "Metadata_Scaffold": MurckoScaffold.MurckoScaffoldSmiles(mol=mol),
            "Num_HeavyAtoms": mol.GetNumHeavyAtoms(),
            "Input_SMILES": smi,
        })
        if len(rows) == n_compounds:
            break
    if len(rows) < n_compounds:
        raise ValueError(f"only {len(rows)} compounds with >= {min_rings} ring(s) available, asked for {n_compounds}")
    return pd.DataFrame(rows)


def _write_compound_tables(store: Store, comp: pd.DataFrame) -> None:
    """``compounds``, ``compound_inputs`` (every input accepted) and ``graphs``."""
    write_table(comp.drop(columns="Input_SMILES"), "compounds", store.table_path("compounds"))
    write_table(
        pd.DataFrame({
            "Metadata_Source": "compounds.csv",
            "Metadata_CompoundID": [ids[0] for ids in comp["Metadata_CompoundIDs"]],
            "Input_SMILES": comp["Input_SMILES"],
            "Status": "ok",
            "Error": None,
            "Metadata_InChIKey": comp["Metadata_InChIKey"],
            "Metadata_SMILES": comp["Metadata_SMILES"],
        }),
        "compound_inputs",
        store.table_path("compound_inputs"),
    )
    write_table(graphs_table(comp), "graphs", store.table_path("graphs"))


def _plate_members(n_compounds: int, *, n_plates: int, n_dmso: int) -> list[np.ndarray]:
    """The compound indices of each plate: all on every plate when they fit one 384-well plate,
    else spread over the plates."""
    if n_compounds + n_dmso <= 384:
        return [np.arange(n_compounds)] * n_plates  # every compound on every plate
    plate_compounds = np.array_split(np.arange(n_compounds), n_plates)
    if max(len(c) for c in plate_compounds) + n_dmso > 384:
        raise ValueError(f"{n_compounds} compounds + {n_dmso} DMSO wells do not fit {n_plates} 384-well plates")
    return plate_compounds


def _well_rows(plate: str, well: str, entry: int, comp: pd.DataFrame) -> tuple[dict, dict | None]:
    """A well's ``platemap`` row and its ``well_compounds`` row (None for DMSO, ``entry == -1``)."""
    is_dmso = entry < 0
    pm_row = {
        "Metadata_Plate": plate, "Metadata_Well": well,
        "Metadata_CompoundID": "DMSO" if is_dmso else comp["Metadata_CompoundIDs"][entry][0],
        "Metadata_SMILES": None if is_dmso else comp["Input_SMILES"][entry],
        "Metadata_Concentration": None if is_dmso else 10.0,
        "Metadata_ControlType": "negcon" if is_dmso else "trt",
        "Metadata_HasImages": True,
    }
    if is_dmso:
        return pm_row, None
    return pm_row, {"Metadata_Plate": plate, "Metadata_Well": well,
                    "Metadata_InChIKey": comp["Metadata_InChIKey"][entry], "Input_SMILES": comp["Input_SMILES"][entry]}


def _cell_crop(rng: np.random.Generator, v: np.ndarray, *, blob: np.ndarray, gain: float, signal: float) -> np.ndarray:
    """One (5, S, S) uint16 crop: noise plus a blob whose channel brightness follows ``v``."""
    S = blob.shape[0]
    amp = 800 * np.exp(0.5 * signal * v) * rng.lognormal(0, 0.15, 5)
    img = gain * (200 + amp[:, None, None] * blob + rng.normal(0, 30, (5, S, S)))
    return np.clip(img, 0, 65535).astype(np.uint16)


def _cell_row(rng: np.random.Generator, crop: np.ndarray, *, plate: str, well: str, c: int, idx: int) -> dict:
    """The ``cells`` row of crop ``idx`` (cell ``c + 1`` of its well)."""
    S = crop.shape[-1]
    return {
        "Metadata_Plate": plate, "Metadata_Well": well, "Metadata_Site": 1 + c % 2,
        "Metadata_CellID": c + 1, "Metadata_CropIndex": idx,
        "Location_Center_Y": float(rng.uniform(0, 500)), "Location_Center_X": float(rng.uniform(0, 500)),
        "BBox_MinY": 0, "BBox_MinX": 0, "BBox_MaxY": S, "BBox_MaxX": S,
        "AreaShape_NucleusArea": int(rng.integers(40, 80)), "AreaShape_CellArea": int(rng.integers(150, 300)),
        **{f"Intensity_Mean_{ch}": float(crop[k].mean()) for k, ch in enumerate(CHANNELS)},
    }


def _write_plate(store: Store, rng: np.random.Generator, p: int, members: np.ndarray, *, comp: pd.DataFrame,
                 sig: np.ndarray, n_dmso: int, cells_per_well: int, crop_size: int, signal: float,
                 tiles: bool) -> list[dict]:
    """Write plate ``p`` (``SYN<p+1>``): platemap, cells, crops (and tiles); returns its
    ``well_compounds`` rows."""
    import zarr

    plate = f"SYN{p + 1:02d}"
    gain = 1 + 0.3 * p
    S = crop_size
    yy, xx = np.mgrid[:S, :S] - (S - 1) / 2
    blob = np.exp(-(yy**2 + xx**2) / (2 * (S / 6) ** 2))
    n_wells = len(members) + n_dmso
    order = rng.permutation(n_wells)  # well slot of each entry (compounds, then DMSO)
    wells = _wells(n_wells)
    pm_rows, cell_rows, crops, well_rows = [], [], [], []
    for slot in np.argsort(order):  # write crops well by well
        well = wells[order[slot]]
        entry = -1 if slot >= len(members) else int(members[slot])
        pm_row, well_row = _well_rows(plate, well, entry, comp)
        pm_rows.append(pm_row)
        if well_row is not None:
            well_rows.append(well_row)
        v = np.zeros(5) if entry < 0 else sig[entry]
        for c in range(cells_per_well):
            crop = _cell_crop(rng, v, blob=blob, gain=gain, signal=signal)
            cell_rows.append(_cell_row(rng, crop, plate=plate, well=well, c=c, idx=len(crops)))
            crops.append(crop)
    write_table(_fill_declared(pd.DataFrame(pm_rows), "platemap"), "platemap", store.table_path("platemap", plate=plate))
    write_table(_fill_declared(pd.DataFrame(cell_rows), "cells"), "cells", store.table_path("cells", plate=plate))
    group = zarr.open_group(str(store.crops_zarr(plate)), mode="w", zarr_format=3)
    group.attrs.update({"channels": list(CHANNELS), "crop_size": S})
    writer = CropArrayWriter(group, "crops", n_channels=len(CHANNELS), size=S)
    writer.append(np.stack(crops))
    writer.close()
    if tiles:
        _write_tiles(store, group, plate, pd.DataFrame(cell_rows), np.stack(crops))
    return well_rows


def make_synthetic_store(
    root: str | Path,
    *,
    n_compounds: int = 96,
    n_plates: int = 2,
    n_dmso: int = 4,
    cells_per_well: int = 8,
    crop_size: int = 16,
    signal: float = 1.0,
    min_rings: int = 1,
    tiles: bool = False,
    seed: int = 0,
) -> Store:
    """Write a synthetic store under ``root`` and return it.

    Each plate holds every compound in one well (shuffled per plate) plus ``n_dmso`` DMSO
    wells, ``cells_per_well`` crops per well written well by well. Plate ``p`` has a gain of
    ``1 + 0.3 p`` so per-plate normalisation matters. ``min_rings=0`` admits acyclic molecules
    (up to ~600 compounds). ``tiles=True`` also writes field tiles (``tiles`` array and table):
    per well, 2 x 2 mosaics of its crops, so tiles are ``2 * crop_size`` px and carry the same
    phenotype.
    """
    store = Store.of(root)
    rng = np.random.default_rng(seed)
    comp = _pick_compounds(n_compounds, min_rings=min_rings)
    _write_compound_tables(store, comp)
    sig = np.stack([structure_signal(s) for s in comp["Metadata_SMILES"]])
    sig = (sig - sig.mean(0)) / (sig.std(0) + 1e-9)  # z-scores per channel
    plate_compounds = _plate_members(n_compounds, n_plates=n_plates, n_dmso=n_dmso)
    well_rows = []
    for p in range(n_plates):
        well_rows += _write_plate(store, rng, p, plate_compounds[p], comp=comp, sig=sig, n_dmso=n_dmso,
                                  cells_per_well=cells_per_well, crop_size=crop_size, signal=signal, tiles=tiles)
    write_table(pd.DataFrame(well_rows), "well_compounds", store.table_path("well_compounds"))
    return store
