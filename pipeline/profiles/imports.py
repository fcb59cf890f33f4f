"""Import the field's public profile tables: find the columns, the features and each row's compound.

DataFrame in, DataFrame out (files are read by :mod:`pipeline.profiles.io`). Formats are told
apart by their columns, not by their file names, so a table cmcl has never seen imports when it
spells its columns one of the ways the field does:

* pycytominer output at well or consensus level (LINCS, JUMP-Target, JUMP-MOA): ``Metadata_*``
  columns and CellProfiler features (``Cells_``/``Cytoplasm_``/``Nuclei_``/``Image_``);
* JUMP cpg0016: ``Metadata_Source``, ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_JCP2022``
  and numbered features (``X_1…X_n``, ``harmony_0…``), optionally renamed by a name table;
* IDR0133 cell injury and other exports with plain names (``Plate``, ``Compound SMILES``,
  ``Compound Concentration (microMolar)``, ``Control Type``).

Column roles are resolved by :func:`resolve_columns` from :data:`ALIASES` (compared without
case, spaces or punctuation), overridden by a user map (``--columns MAP.toml``). A row's
compound is, in order: its inline SMILES, standardized by :func:`pipeline.chem.standardize.standardize_smiles`
(the file's InChIKey kept beside the parent's); a compound map joined on an identifier column
both tables share (:func:`join_compound_map`: JUMP's ``Metadata_JCP2022`` table, the Drug
Repurposing Hub by ``pert_id``); its inline InChIKey alone (kept as given, no structure).
:func:`import_profiles` returns the ``profiles_imported`` rows and one row per compound that got
no parent, with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "ROLES",
    "ALIASES",
    "IMPORTED_METADATA",
    "DMSO_INCHIKEY",
    "ProfileImportError",
    "ImportedProfiles",
    "resolve_columns",
    "profile_features",
    "rename_numbered",
    "join_compound_map",
    "import_profiles",
    "as_well_profiles",
    "compound_records",
]

#: Column roles an imported table may fill, and the spellings recognised for each, compared
#: after lower-casing and dropping everything but letters and digits (first match wins).
ALIASES: dict[str, tuple[str, ...]] = {
    "plate": ("Metadata_Plate", "Plate", "Image_Metadata_Plate", "Metadata_plate_map_name", "plate_id", "Assay_Plate_Barcode"),
    "well": ("Metadata_Well", "Well", "Image_Metadata_Well", "Metadata_well_position", "well_position"),
    "smiles": ("Metadata_SMILES", "Compound SMILES", "Metadata_canonical_smiles", "SMILES", "canonical_smiles",
               "Metadata_Compound_SMILES"),
    "inchikey": ("Metadata_InChIKey", "Compound InChIKey", "InChIKey", "Metadata_Compound_InChIKey",
                 "Metadata_standard_inchikey"),
    "inchi": ("Metadata_InChI", "Compound InChI", "InChI", "Metadata_Compound_InChI", "Metadata_standard_inchi"),
    "compound": ("Metadata_JCP2022", "Metadata_broad_sample", "Metadata_CompoundID", "Compound BRD",
                 "Metadata_pert_id", "Metadata_broad_id", "broad_sample", "Metadata_Compound", "compound_id"),
    "name": ("Metadata_pert_iname", "Compound Name", "Metadata_CompoundName", "Metadata_compound_name", "pert_iname"),
    "dose": ("Metadata_Concentration", "Metadata_mmoles_per_liter", "Compound Concentration (microMolar)",
             "Metadata_concentration_uM", "Metadata_dose", "concentration"),
    "control": ("Metadata_ControlType", "Metadata_control_type", "Control Type", "Metadata_pert_type"),
    "moa": ("Metadata_MOA", "Metadata_moa", "moa"),
    "batch": ("Metadata_Source", "Metadata_Batch", "Experimental Condition [Experimental Batch]", "Batch"),
}
ROLES: tuple[str, ...] = tuple(ALIASES)
#: µM per unit of a dose column, by the spelling that names its unit (others: µM).
_DOSE_UNITS: dict[str, float] = {"metadatammolesperliter": 1000.0}
_UNIT_FACTORS: dict[str, float] = {"um": 1.0, "µm": 1.0, "micromolar": 1.0, "mm": 1000.0, "nm": 1e-3, "m": 1e6}
#: Parent InChIKey of DMSO: a row whose compound standardizes to it is a negative control.
DMSO_INCHIKEY = "IAZDPXIOMUYVGZ-UHFFFAOYSA-N"
_NEG = {"negcon", "negative", "negativecontrol", "control", "ctrl", "neg", "dmso", "vehicle"}
_POS = {"poscon", "positive", "positivecontrol", "pos"}

#: Declared columns of ``profiles_imported`` (schemas/tables/profiles_imported.json), in order.
IMPORTED_METADATA: tuple[str, ...] = (
    "Metadata_Plate", "Metadata_Well", "Metadata_CompoundID", "Metadata_InChIKey", "Metadata_SMILES",
    "Metadata_InputInChIKey", "Metadata_InputSMILES", "Metadata_Identity", "Metadata_CompoundName",
    "Metadata_Concentration", "Metadata_ControlType", "Metadata_MOA", "Metadata_Batch", "Metadata_Source")

_CP_PREFIX = re.compile(r"^(Cells|Cytoplasm|Nuclei|Image)_")
_IMAGE_NOT_FEATURE = re.compile(r"^Image_(Metadata|FileName|PathName|URL|MD5Digest|ExecutionTime|ModuleError|Group|"
                                r"Series|Frame|Scaling|Width|Height|ImageSet|Channel)")
_NUMBERED = re.compile(r"^(?:([A-Za-z][A-Za-z0-9]*)_)?(\d+)$")  # X_1, harmony_0, or bare 0, 1, ...


class ProfileImportError(ValueError):
    """A profile table (or its compound map, column map or name table) cannot be imported; the
    message names the file or column and what to do."""


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-zµ]", "", str(name).lower())


def resolve_columns(columns: Sequence[str], *, user_map: Mapping[str, str] | None = None,
                    what: str = "profile table") -> dict[str, str]:
    """Which column of a table fills each role of :data:`ROLES`.

    Parameters
    ----------
    columns : sequence of str
        The table's column names.
    user_map : mapping, optional
        ``{file column: role}`` (``--columns MAP.toml``); wins over :data:`ALIASES`.
    what : str
        Names the table in errors.

    Returns
    -------
    dict
        ``{role: column}`` for the roles found.

    Raises
    ------
    ProfileImportError
        If the user map names a column the table lacks or a role that does not exist.
    """
    cols = list(columns)
    found: dict[str, str] = {}
    for col, role in (user_map or {}).items():
        if role not in ROLES:
            raise ProfileImportError(f"column map: {col!r} -> {role!r}: unknown role; roles are {', '.join(ROLES)}")
        if col not in cols:
            raise ProfileImportError(f"column map: {what} has no column {col!r} (mapped to {role!r})")
        found[role] = col
    by_norm: dict[str, str] = {}
    for c in cols:
        by_norm.setdefault(_norm(c), c)
    taken = set(found.values())
    for role, spellings in ALIASES.items():
        if role in found:
            continue
        for s in spellings:
            c = by_norm.get(_norm(s))
            if c is not None and c not in taken:
                found[role] = c
                taken.add(c)
                break
    return found


def profile_features(table: pd.DataFrame) -> tuple[list[str], str]:
    """The feature columns of a profile table and their kind.

    CellProfiler-named numeric columns (``Cells_``/``Cytoplasm_``/``Nuclei_``/``Image_``, without
    Image bookkeeping such as ``Image_FileName_*``) when there are any; otherwise numbered
    numeric columns of one family (``X_1…``, ``harmony_0…``: the largest family, at least two).

    Returns
    -------
    features : list of str
        In the table's order.
    kind : {'cellprofiler', 'numbered'}

    Raises
    ------
    ProfileImportError
        If the table has neither.
    """
    numeric = {c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])}
    cp = [c for c in table.columns if c in numeric and _CP_PREFIX.match(c) and not _IMAGE_NOT_FEATURE.match(c)]
    if cp:
        return cp, "cellprofiler"
    families: dict[str, list[str]] = {}
    for c in table.columns:
        m = _NUMBERED.match(str(c))
        if m and c in numeric and not str(c).startswith("Metadata_"):
            families.setdefault(m.group(1) or "", []).append(c)
    best = max(families.values(), key=len, default=[])
    if len(best) < 2:
        raise ProfileImportError("no feature columns: neither CellProfiler-named (Cells_/Cytoplasm_/Nuclei_/Image_) "
                                 "nor numbered (X_1…, harmony_0…)")
    return best, "numbered"


def rename_numbered(features: Sequence[str], names: pd.DataFrame) -> dict[str, str]:
    """``{numbered column: name}`` from a name table.

    Parameters
    ----------
    features : sequence of str
        The numbered feature columns, in the table's order.
    names : DataFrame
        Either two columns (numbered column, name), or one column of names in feature order.

    Raises
    ------
    ProfileImportError
        If a one-column table's length differs from the number of features, a name repeats, or
        a two-column table misses one of the features.
    """
    if names.shape[1] >= 2:
        pairs = dict(zip(names.iloc[:, 0].astype(str), names.iloc[:, 1].astype(str)))
        missing = [f for f in features if f not in pairs]
        if missing:
            raise ProfileImportError(f"feature name table names no {missing[:5]} ({len(missing)} of {len(features)} missing)")
        mapping = {f: pairs[f] for f in features}
    else:
        col = names.iloc[:, 0].astype(str).tolist()
        if len(col) != len(features):
            raise ProfileImportError(f"feature name table has {len(col)} names for {len(features)} numbered features")
        mapping = dict(zip(features, col))
    dup = pd.Series(list(mapping.values())).duplicated()
    if dup.any():
        raise ProfileImportError(f"feature name table repeats {sorted(set(pd.Series(list(mapping.values()))[dup]))[:5]}")
    return mapping


def _text(values: pd.Series) -> pd.Series:
    """Strings with blanks, NaN and 'nan' as None (object dtype)."""
    s = values.astype(object).where(values.notna(), None)
    s = s.map(lambda v: None if v is None or str(v).strip() == "" or str(v).strip().lower() in {"nan", "none"}
              else str(v).strip())
    return s.astype(object)


def _none(values: pd.Series) -> pd.Series:
    """Object dtype with NaN as None."""
    return values.astype(object).where(values.notna(), None)


@dataclass(frozen=True)
class _MapJoin:
    key_profile: str
    key_map: str
    prefix: int | None  # Hub joins compare the first 13 characters (pert_id)
    alt_keys: tuple[str, ...] = ()  # further map columns tried in turn ('|'-separated lists allowed)


def _map_join_keys(profile_cols: Sequence[str], map_cols: Sequence[str], roles: Mapping[str, str]) -> _MapJoin | None:
    """The identifier column a profile table and a compound map share: the same name (JUMP's
    ``Metadata_JCP2022``), the Hub's ``pert_id`` (first 13 characters of a Broad sample ID), or
    the same name without ``Metadata_`` (``Metadata_broad_sample`` <-> ``broad_sample``).
    Never a plate, well, dose, name or structure column (no joins on free text)."""
    not_ids = {c for r, c in roles.items() if r != "compound"}
    map_norm = {_norm(c): c for c in map_cols}
    prof = [c for c in profile_cols if c not in not_ids]
    if roles.get("compound") in prof:  # the compound column first
        prof.remove(roles["compound"])
        prof.insert(0, roles["compound"])
    for c in prof:
        m = map_norm.get(_norm(c))
        if m is not None:
            return _MapJoin(c, m, None)
    brd = next((c for c in prof if _norm(c) in {"metadatabroadsample", "compoundbrd", "metadatapertid", "broadsample"}), None)
    hub = map_norm.get("pertid") or map_norm.get("broadid")
    if brd is not None and hub is not None:  # the Hub renames samples: its deprecated_broad_id keeps the old IDs
        return _MapJoin(brd, hub, 13, tuple(c for c in (map_norm.get("deprecatedbroadid"),) if c))
    for c in prof:
        m = map_norm.get(_norm(c)[len("metadata"):]) if _norm(c).startswith("metadata") else None
        if m is not None:
            return _MapJoin(c, m, None)
    return None


def join_compound_map(ids: pd.Series, compound_map: pd.DataFrame, *, map_key: str, prefix: int | None = None,
                      alt_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Look identifiers up in a compound map.

    Parameters
    ----------
    ids : Series of str or None
        The profile rows' identifiers.
    compound_map : DataFrame
        ``map_key`` and ``smiles``, ``inchi`` or ``inchikey`` (and optionally ``moa``) columns, already
        renamed to those roles by the caller.
    map_key : str
        The map's identifier column.
    prefix : int, optional
        Compare the first ``prefix`` characters of both sides (Hub ``pert_id``).
    alt_keys : sequence of str
        Further identifier columns of the map, tried after ``map_key`` (cells may list several
        IDs separated by ``|``, as the Hub's ``deprecated_broad_id``).

    Returns
    -------
    DataFrame
        Indexed like ``ids``: ``smiles``, ``inchi``, ``inchikey``, ``moa`` (None where not found), ``found`` (bool).
    """
    def key(s: pd.Series) -> pd.Series:
        s = s.astype(object).where(s.notna(), None)
        return s.map(lambda v: None if v is None else (str(v)[:prefix] if prefix else str(v)))

    parts = []
    for col in (map_key, *alt_keys):
        v = compound_map[col].astype(object).where(compound_map[col].notna(), None)
        part = compound_map.assign(_k=v.map(lambda x: None if x is None else str(x).split("|"))).explode("_k")
        parts.append(part.assign(_k=key(part["_k"])))
    m = pd.concat(parts).dropna(subset=["_k"]).drop_duplicates("_k").set_index("_k")  # map_key first
    k = key(ids)
    out = pd.DataFrame(index=ids.index)
    for col in ("smiles", "inchi", "inchikey", "moa"):
        out[col] = k.map(m[col]) if col in m.columns else None
        out[col] = _text(out[col]) if col in m.columns else pd.Series(None, index=ids.index, dtype=object)
    out["found"] = k.isin(m.index).to_numpy()
    return out


def _dose_factor(col: str | None, unit: str | None) -> float:
    if unit is not None:
        f = _UNIT_FACTORS.get(unit.strip().lower().replace("μ", "µ"))
        if f is None:
            raise ProfileImportError(f"dose unit {unit!r}: use one of {', '.join(_UNIT_FACTORS)}")
        return f
    return _DOSE_UNITS.get(_norm(col or ""), 1.0)


def _controls(t: pd.DataFrame, roles: Mapping[str, str], ident: pd.Series) -> pd.Series:
    out = pd.Series("trt", index=t.index, dtype=object)
    if "control" in roles:
        v = _text(t[roles["control"]]).map(lambda x: _norm(x) if x else "")
        out[v.isin(_NEG)] = "negcon"
        out[v.str.startswith("poscon") | v.isin(_POS)] = "poscon"
    named_dmso = ident.map(lambda x: x is not None and _norm(x) == "dmso").astype(bool)
    if "name" in roles:
        named_dmso |= _text(t[roles["name"]]).map(lambda x: x is not None and _norm(x) == "dmso").astype(bool)
    out[named_dmso] = "negcon"
    return out


@dataclass
class ImportedProfiles:
    """What :func:`import_profiles` read.

    Attributes
    ----------
    profiles : DataFrame
        ``profiles_imported`` rows: :data:`IMPORTED_METADATA`, the file's other identifier columns
        (``Metadata_*``, names of other columns prefixed ``Metadata_``) and the features (float32).
    unjoined : DataFrame
        One row per treated compound without a parent: ``Metadata_CompoundID``, ``rows``, ``reason``.
    features : list of str
    feature_kind : {'cellprofiler', 'numbered'}
    roles : dict
        ``{role: file column}`` as resolved.
    """

    profiles: pd.DataFrame
    unjoined: pd.DataFrame
    features: list[str]
    feature_kind: str
    roles: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        """Rows, features, compounds read and joined, unjoined compounds with their reasons."""
        p = self.profiles
        trt = p[p["Metadata_ControlType"] != "negcon"]
        comp = trt["Metadata_CompoundID"].dropna()
        joined = trt.dropna(subset=["Metadata_InChIKey"])["Metadata_CompoundID"].dropna()
        return {"rows": len(p), "features": len(self.features), "feature_kind": self.feature_kind,
                "negcon_rows": int((p["Metadata_ControlType"] == "negcon").sum()),
                "compounds": int(comp.nunique()), "joined": int(joined.nunique()),
                "parents": int(trt["Metadata_InChIKey"].dropna().nunique()),
                "identity": {str(k): int(v) for k, v in trt.drop_duplicates("Metadata_CompoundID")["Metadata_Identity"]
                             .fillna("none").value_counts().items()},
                "roles": dict(self.roles),
                "unjoined": self.unjoined.to_dict(orient="records")}


def _standardized(smiles: pd.Series, *, n_jobs: int = 1) -> pd.DataFrame:
    """Parent InChIKey / SMILES / error per row, standardizing each distinct SMILES once
    (:func:`pipeline.chem.standardize.standardize_table`; worker processes from 2,000 distinct SMILES)."""
    from pipeline.chem.standardize import standardize_table

    uniq = pd.Series(smiles.dropna().unique(), dtype=object)
    recs = pd.DataFrame({"Metadata_Source": "import", "Metadata_CompoundID": uniq.astype(str), "Input_SMILES": uniq})
    res = standardize_table(recs, n_jobs=n_jobs if len(uniq) >= 2000 else 1).set_index(uniq.to_numpy())
    out = pd.DataFrame({"inchikey": smiles.map(res["Metadata_InChIKey"]), "smiles": smiles.map(res["Metadata_SMILES"]),
                        "error": smiles.map(res["Error"])}, index=smiles.index)
    return out.astype(object).where(out.notna(), None)


def _smiles_from_inchi(inchi: pd.Series) -> pd.Series:
    """SMILES of each InChI RDKit can read (None otherwise), each distinct InChI once."""
    from rdkit import Chem

    from pipeline.chem.rdkit_log import quiet_rdkit

    def one(x: str) -> str | None:
        mol = Chem.MolFromInchi(x)
        return Chem.MolToSmiles(mol) if mol is not None and mol.GetNumAtoms() else None

    with quiet_rdkit():
        res = {x: one(x) for x in inchi.dropna().unique()}
    return _none(inchi.map(lambda x: res.get(x) if isinstance(x, str) else None))


def _identity(t: pd.DataFrame, roles: Mapping[str, str], compound_map: pd.DataFrame | None,
              join: _MapJoin | None, *, n_jobs: int = 1) -> pd.DataFrame:
    """Per row: input SMILES/InChIKey, parent InChIKey/SMILES, how it was found, or why not."""
    n = pd.Series(None, index=t.index, dtype=object)
    given = {r: (_text(t[roles[r]]) if r in roles else n.copy()) for r in ("smiles", "inchi", "inchikey")}
    how = pd.Series(np.where(given["smiles"].notna() | given["inchi"].notna(), "inline", None), index=t.index,
                    dtype=object)
    reason, moa = n.copy(), n.copy()
    if compound_map is not None and join is not None:
        hit = join_compound_map(t[join.key_profile], compound_map, map_key=join.key_map, prefix=join.prefix,
                                alt_keys=join.alt_keys)
        use = given["smiles"].isna() & given["inchi"].isna() & (hit["smiles"].notna() | hit["inchi"].notna())
        for r in ("smiles", "inchi"):
            given[r] = _none(given[r].where(~use, hit[r]))
        given["inchikey"] = _none(given["inchikey"].where(given["inchikey"].notna(), hit["inchikey"]))
        how[use | (how.isna() & hit["inchikey"].notna())] = f"map:{join.key_profile}"
        moa = hit["moa"]
        open_ = given["smiles"].isna() & given["inchi"].isna() & _text(t[join.key_profile]).notna()
        reason[open_ & ~hit["found"]] = f"{join.key_profile} not in the compound map"
        reason[open_ & hit["found"]] = "the compound map has no structure for it"
    in_smiles = given["smiles"]
    from_inchi = in_smiles.isna() & given["inchi"].notna()
    in_smiles = _none(in_smiles.where(~from_inchi, _smiles_from_inchi(given["inchi"].where(from_inchi))))
    reason[from_inchi & in_smiles.isna()] = "InChI could not be read"
    std = _standardized(in_smiles, n_jobs=n_jobs)
    parent_key, parent_smiles = std["inchikey"], std["smiles"]
    failed = in_smiles.notna() & parent_key.isna()
    reason[failed] = "SMILES failed standardization: " + std["error"][failed].astype(str)
    in_key = given["inchikey"]
    only_key = in_smiles.isna() & in_key.notna()  # an InChIKey without a structure: kept as given
    parent_key = _none(parent_key.where(~only_key, in_key))
    reason[only_key] = None
    how[failed | (in_smiles.isna() & ~only_key)] = None
    how[only_key & how.isna()] = "inchikey"
    reason[parent_key.isna() & reason.isna()] = (
        "no SMILES, InChI or InChIKey in the file, and no --compound-map given" if compound_map is None else
        "no SMILES, InChI or InChIKey in the file, nor an identifier the compound map shares")
    return pd.DataFrame({"Metadata_InputSMILES": in_smiles, "Metadata_InputInChIKey": in_key,
                         "Metadata_InChIKey": parent_key, "Metadata_SMILES": parent_smiles,
                         "Metadata_Identity": how, "reason": reason, "moa": moa}, index=t.index).astype(object)


def _extra_metadata(t: pd.DataFrame, used: set[str], features: set[str]) -> pd.DataFrame:
    """The file's other non-feature columns as ``Metadata_*`` strings (its own identifiers, labels)."""
    taken = {c.lower() for c in IMPORTED_METADATA}
    out: dict[str, pd.Series] = {}
    for c in t.columns:
        if c in used or c in features:
            continue
        name = str(c) if str(c).startswith("Metadata_") else "Metadata_" + re.sub(r"[^0-9A-Za-z]+", "_", str(c)).strip("_")
        if name.lower() in taken or name.lower() in {k.lower() for k in out}:
            continue
        out[name] = _text(t[c]).map(lambda v: None if v is None else str(v))
    return pd.DataFrame(out, index=t.index)


def _prepared_map(t: pd.DataFrame, roles: Mapping[str, str], compound_map: pd.DataFrame,
                  map_roles: Mapping[str, str] | None) -> tuple[pd.DataFrame, _MapJoin]:
    """The compound map with its structure columns renamed to their roles, and the join."""
    mroles = dict(map_roles or {})
    if not {"smiles", "inchi", "inchikey"} & set(mroles):
        raise ProfileImportError(f"compound map has no SMILES, InChI or InChIKey column "
                                 f"(columns: {list(compound_map.columns)[:12]})")
    join = _map_join_keys(t.columns, compound_map.columns, roles)
    if join is None:
        raise ProfileImportError(
            f"compound map shares no identifier column with the profile table (map: {list(compound_map.columns)[:12]}; "
            f"table: {[c for c in t.columns if c.startswith('Metadata_')][:12]})")
    cmap = compound_map.rename(columns={mroles[r]: r for r in ("smiles", "inchi", "inchikey", "moa") if r in mroles})
    if join.key_map in mroles.values():
        join = _MapJoin(join.key_profile, next(r for r, c in mroles.items() if c == join.key_map), join.prefix)
    return cmap, join


def import_profiles(table: pd.DataFrame, *, source: str, user_map: Mapping[str, str] | None = None,
                    compound_map: pd.DataFrame | None = None, map_roles: Mapping[str, str] | None = None,
                    feature_names: pd.DataFrame | None = None, moa_map: pd.DataFrame | None = None,
                    dose_unit: str | None = None, n_jobs: int = 1) -> ImportedProfiles:
    """Map one profile table onto the ``profiles_imported`` columns.

    Parameters
    ----------
    table : DataFrame
        A profile table, one row per well (or per compound and dose at consensus level).
    source : str
        ``Metadata_Source`` of every row (``'import:<file name>'``); also the plate of tables
        without a plate column.
    user_map : mapping, optional
        ``{file column: role}`` (:func:`resolve_columns`).
    compound_map : DataFrame, optional
        Identifier -> structure table (JUMP's compound table, the Hub's samples).
    map_roles : mapping, optional
        ``{role: map column}`` for ``compound_map`` (``smiles``, ``inchi`` or ``inchikey``
        required; from :func:`resolve_columns`).
    feature_names : DataFrame, optional
        Names of numbered features (:func:`rename_numbered`).
    moa_map : DataFrame, optional
        ``pert_id``, ``moa`` (the Hub's drug table): mechanisms where the table has none.
    dose_unit : str, optional
        Unit of the dose column (``'uM'``, ``'mM'``, ``'nM'``); default from its name.
    n_jobs : int, default 1
        Worker processes standardizing the SMILES (used from 2,000 distinct ones).

    Returns
    -------
    ImportedProfiles

    Raises
    ------
    ProfileImportError
        If the table has no features, the compound map shares no identifier with it or lacks
        SMILES.
    """
    t = table.reset_index(drop=True)
    roles = resolve_columns(t.columns, user_map=user_map)
    feats, kind = profile_features(t.drop(columns=list(roles.values())))
    cmap, join = _prepared_map(t, roles, compound_map, map_roles) if compound_map is not None else (None, None)
    ident = _identity(t, roles, cmap, join, n_jobs=n_jobs)
    cid_col = roles.get("compound") or (join.key_profile if join else None)
    cid = _text(t[cid_col]) if cid_col else pd.Series(None, index=t.index, dtype=object)
    cid = cid.fillna(ident["Metadata_InputInChIKey"]).fillna(ident["Metadata_InputSMILES"])
    if "name" in roles:
        cid = cid.fillna(_text(t[roles["name"]]))
    control = _controls(t, roles, cid)
    control[cid.isna().to_numpy()] = "negcon"  # pycytominer writes DMSO wells without a compound (as LINCS, JUMP)
    control[ident["Metadata_InChIKey"].eq(DMSO_INCHIKEY).to_numpy()] = "negcon"
    plate = _text(t[roles["plate"]]).fillna(source) if "plate" in roles else pd.Series(source, index=t.index)
    well = _text(t[roles["well"]]) if "well" in roles else pd.Series(None, index=t.index, dtype=object)
    dose = (pd.to_numeric(t[roles["dose"]], errors="coerce") * _dose_factor(roles["dose"], dose_unit)
            if "dose" in roles else pd.Series(np.nan, index=t.index))
    moa = _text(t[roles["moa"]]) if "moa" in roles else pd.Series(None, index=t.index, dtype=object)
    moa = moa.fillna(ident["moa"])
    if moa_map is not None and {"pert_id", "moa"} <= set(moa_map.columns):
        moa = moa.fillna(cid.map(lambda v: None if v is None else str(v)[:13]).map(
            moa_map.drop_duplicates("pert_id").set_index("pert_id")["moa"]))
    batch = _text(t[roles["batch"]]).fillna(plate) if "batch" in roles else plate
    meta = pd.DataFrame({
        "Metadata_Plate": plate, "Metadata_Well": well, "Metadata_CompoundID": cid,
        "Metadata_InChIKey": ident["Metadata_InChIKey"], "Metadata_SMILES": ident["Metadata_SMILES"],
        "Metadata_InputInChIKey": ident["Metadata_InputInChIKey"], "Metadata_InputSMILES": ident["Metadata_InputSMILES"],
        "Metadata_Identity": ident["Metadata_Identity"],
        "Metadata_CompoundName": _text(t[roles["name"]]) if "name" in roles else None,
        "Metadata_Concentration": dose.astype(float), "Metadata_ControlType": control,
        "Metadata_MOA": moa.where(control != "negcon", None), "Metadata_Batch": batch, "Metadata_Source": source})
    extra = _extra_metadata(t, {c for r, c in roles.items() if r != "compound"}, set(feats))  # its IDs kept
    x = t[feats].astype(np.float32)
    if feature_names is not None:
        if kind != "numbered":
            raise ProfileImportError("a feature name table applies to numbered features; this table's are CellProfiler-named")
        x = x.rename(columns=rename_numbered(feats, feature_names))
        kind = "cellprofiler" if all(_CP_PREFIX.match(c) for c in x.columns) else "named"
    profiles = pd.concat([meta, extra, x], axis=1)
    trt = (control != "negcon") & cid.notna()
    bad = pd.DataFrame({"Metadata_CompoundID": cid[trt], "reason": ident["reason"][trt]}).dropna(subset=["reason"])
    unjoined = (bad.groupby(["Metadata_CompoundID", "reason"], sort=True).size().rename("rows").reset_index()
                [["Metadata_CompoundID", "rows", "reason"]])
    unjoined = unjoined[~unjoined["Metadata_CompoundID"].isin(profiles.loc[trt & profiles["Metadata_InChIKey"].notna(),
                                                                           "Metadata_CompoundID"])]
    return ImportedProfiles(profiles, unjoined.reset_index(drop=True), list(x.columns), kind, roles)


def as_well_profiles(imported: pd.DataFrame, *, metadata: Sequence[str]) -> pd.DataFrame | None:
    """``profiles_imported`` rows as ``profiles_wells`` rows (``metadata`` columns, then the
    ``Cells_``/``Cytoplasm_``/``Nuclei_`` features) for ``cmcl profile``; None when the table
    has no such feature (numbered features are trained on, not scored) or no well column."""
    feats = [c for c in imported.columns if re.match(r"^(Cells|Cytoplasm|Nuclei)_", c)]
    if not feats or imported["Metadata_Well"].isna().all():
        return None
    out = imported.reindex(columns=list(metadata))
    out["Metadata_Count_Cells"] = pd.array([pd.NA] * len(out), dtype="Int32")
    out["Metadata_Well"] = out["Metadata_Well"].fillna("")
    return pd.concat([out, imported[feats]], axis=1).copy()


def compound_records(imported: pd.DataFrame) -> pd.DataFrame:
    """The structures of imported profiles as compound input records (``cmcl compounds``).

    Parameters
    ----------
    imported : DataFrame
        ``profiles_imported`` rows (at least ``Metadata_Source``, ``Metadata_CompoundID``,
        ``Metadata_InputSMILES``, ``Metadata_ControlType``).

    Returns
    -------
    DataFrame
        ``Metadata_Source`` (``import:<file>``), ``Metadata_CompoundID``, ``Input_SMILES``,
        ``Error`` (None): one row per distinct record of a non-control row with a SMILES.
    """
    t = imported[(imported["Metadata_ControlType"] != "negcon") & imported["Metadata_InputSMILES"].notna()]
    out = pd.DataFrame({"Metadata_Source": t["Metadata_Source"].astype(str),
                        "Metadata_CompoundID": t["Metadata_CompoundID"].fillna(t["Metadata_InputSMILES"]).astype(str),
                        "Input_SMILES": t["Metadata_InputSMILES"].astype(str), "Error": None})
    return out.drop_duplicates(ignore_index=True).sort_values(["Metadata_Source", "Metadata_CompoundID", "Input_SMILES"],
                                                              ignore_index=True)
