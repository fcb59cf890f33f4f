"""Plate folders of the synthetic screen in ImageXpress, Phenix/Harmony or LoadData layout, with
``platemap.csv``, ground truth and, optionally, deliberate file faults. :func:`generate` and
:func:`generate_demo` are the entry points of the CLI."""

from __future__ import annotations

import dataclasses
import io
import uuid
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import tifffile

from pipeline.plates.vendors import Layout, get_vendor, layout_names
from pipeline.store.paths import CHANNELS
from pipeline.synthetic.design import design_plates, well_names
from pipeline.synthetic.phenotype import DMSO, POSITIVE_CONTROL, Phenotype, effective_phenotype, phenotype_from_smiles
from pipeline.synthetic.render import illumination_fields, render_field

__all__ = ["FAULT_KINDS", "write_plate", "generate", "generate_demo", "read_ground_truth"]

#: Faults written by ``write_plate(..., faults=True)``, one of each.
FAULT_KINDS: tuple[str, ...] = (
    "truncated",
    "zero_bytes",
    "missing_channel",
    "wrong_dtype",
    "wrong_shape",
    "duplicate_site",
)


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _field_rng(seed: int, plate_id: str, well: str, site: int) -> np.random.Generator:
    return np.random.default_rng([seed, _crc(plate_id), _crc(well), site])


def _guid(*parts: object) -> str:
    digest = zlib.crc32(repr(parts).encode()).to_bytes(4, "big")
    raw = np.random.default_rng(list(digest)).bytes(16)
    return str(uuid.UUID(bytes=raw)).upper()


def _write_tiff(path: Path, array: np.ndarray) -> None:
    tifffile.imwrite(path, array, photometric="minisblack", metadata=None, software=False)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    """A compressed .npz with fixed zip timestamps (np.savez stamps the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def _image_relpath(layout: str, plate_id: str, well: str, site: int, ch: int, guid: str) -> str:
    """Where channel index ``ch`` of a field goes: the vendor's file-name rule, or for LoadData
    (whose CSV names the files) the generator's own ``images/<well>/<well>_s<site>_<Channel>.tiff``."""
    if layout == "loaddata":
        return f"images/{well}/{well}_s{site}_{CHANNELS[ch]}.tiff"
    return get_vendor(layout).image_name(plate_id, well, site, ch + 1, guid=guid)


def _well_phenotype(row: pd.Series, rng: np.random.Generator) -> tuple[Phenotype, bool]:
    control = row["Metadata_ControlType"]
    if control == "negcon":
        base = DMSO
    elif control == "poscon":
        base = effective_phenotype(POSITIVE_CONTROL, float(row["Metadata_Concentration"]))
    else:
        base = effective_phenotype(
            phenotype_from_smiles(str(row["Metadata_SMILES"])), float(row["Metadata_Concentration"])
        )
    active = control == "poscon" or (control == "trt" and base.magnitude() > 0.15)
    # biological well-to-well noise on the intensities
    jitter = {
        k: getattr(base, k) * float(rng.lognormal(0.0, 0.04))
        for k in ("dna_intensity", "er_intensity", "rna_intensity", "agp_intensity", "mito_intensity")
    }
    return dataclasses.replace(base, **jitter), active


def write_plate(
    out_dir: Path,
    platemap: pd.DataFrame,
    *,
    plate_id: str,
    layout: Layout | str = "imagexpress",
    sites: int = 1,
    size: int = 256,
    nucleus_radius: float = 8.0,
    seed: int = 0,
    faults: bool = False,
    ground_truth: bool = True,
    defocus_rate: float = 0.03,
    bleed_through: float = 0.0,
) -> Path:
    """Render and write one plate folder ``out_dir / plate_id``.

    Files (channels 1..5 = :data:`CHANNELS`; uint16, uncompressed, no varying tags):

    * ``imagexpress``: ``<plate>_<well>_s<site>_w<ch><GUID>.tif`` plus a 4x-downsampled
      ``<plate>_<well>_s<site>_w<ch>_thumb<GUID>.tif`` beside each (readers must skip thumbs);
      the GUID (36 uppercase characters) is derived from (seed, plate, channel).
    * ``phenix``: ``Images/r<row>c<col>f<site>p01-ch<ch>sk1fk1fl1.tiff`` (two digits each).

    ImageXpress and Phenix plates carry the instrument's channel names, as real exports do: a
    MetaXpress ``<plate>.HTD`` (wave names DAPI, FITC, Cy3, Texas Red, Cy5) or a Harmony
    ``Images/Index.idx.xml`` (HOECHST 33342, Alexa 488, 488 long, Alexa 568, Alexa 647).
    * ``loaddata``: ``images/<well>/<well>_s<site>_<Channel>.tiff`` and ``load_data.csv`` with
      ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site``, ``FileName_Orig<Ch>`` and
      ``PathName_Orig<Ch>`` (relative to the CSV).

    Always ``platemap.csv`` (as from :func:`design_plates`). With ``ground_truth``:
    ``ground_truth/labels/<well>_s<site>.npz`` (arrays ``nuclei``, ``cells``, uint32),
    ``ground_truth/illumination.npy`` ((5, size, size) float32), ``ground_truth/phenotypes.csv``
    (per well: effective phenotype, ``active``), ``ground_truth/fields.csv`` (per field:
    ``n_nuclei``, ``out_of_focus``). With ``faults``: one each of :data:`FAULT_KINDS`, listed in
    ``ground_truth/faults.csv`` (columns ``fault``, ``file``, ``well``, ``site``, ``channel``).
    Fields are rendered and written one at a time, so memory stays at a few field sizes.

    Parameters
    ----------
    out_dir : pathlib.Path
        Parent folder; created if absent.
    platemap : pandas.DataFrame
        One plate map from :func:`design_plates`.
    plate_id : str
        Plate name, used in folder and file names (letters, digits, ``-``; no ``_``).
    layout : {'imagexpress', 'phenix', 'loaddata'} or a registered layout
        File naming scheme (:meth:`pipeline.plates.vendors.base.Vendor.image_name`); registered: no metadata file.
    sites : int
        Fields per well.
    size, nucleus_radius : int, float
        See :func:`render_field`.
    seed : int
        Seed of everything (also selects the simulated microscope's illumination).
    faults : bool
        Inject one fault of each kind (needs at least 6 wells).
    ground_truth : bool
        Write the ``ground_truth/`` folder.
    defocus_rate : float
        Probability that a field is out of focus.
    bleed_through : float
        Spectral bleed-through between neighbouring channels (see :func:`render_field`); 0: off.

    Returns
    -------
    pathlib.Path
        The plate folder.

    Raises
    ------
    ValueError
        On an unknown layout (the message lists the valid ones), a bad plate id, a plate map
        without the required columns, or too few wells for ``faults``.
    """
    _check_plate_args(platemap, plate_id=plate_id, layout=layout, sites=sites, faults=faults)
    wells = list(platemap["Metadata_Well"])
    plate_dir = Path(out_dir) / plate_id
    plate_dir.mkdir(parents=True, exist_ok=True)
    platemap.loc[:, _PLATEMAP_COLUMNS].to_csv(plate_dir / "platemap.csv", index=False)
    illum = illumination_fields(size, seed)
    gt = plate_dir / "ground_truth"
    if ground_truth:
        (gt / "labels").mkdir(parents=True, exist_ok=True)
        with open(gt / "illumination.npy", "wb") as fh:
            np.save(fh, illum)
    files = _FieldFiles(plate_dir=plate_dir, layout=layout, plate_id=plate_id, seed=seed, size=size,
                        fault_at=_place_faults(wells, plate_id=plate_id, sites=sites, seed=seed) if faults else {})
    rows, cols = _plate_shape(wells)
    pheno_rows, field_rows = _render_wells(
        platemap, files, labels=gt / "labels" if ground_truth else None, illumination=illum, seed=seed,
        plate_id=plate_id, sites=sites, size=size, nucleus_radius=nucleus_radius, defocus_rate=defocus_rate,
        bleed_through=bleed_through, rows=rows, cols=cols)
    if layout == "loaddata":
        _write_load_data(plate_dir / "load_data.csv", files.load_rows)
    else:
        _write_instrument_metadata(plate_dir, layout, plate_id=plate_id, rows=rows, cols=cols, sites=sites)
    if ground_truth:
        _write_ground_truth(gt, pheno_rows, field_rows, files.fault_rows if faults else None)
    return plate_dir


def _write_ground_truth(gt: Path, pheno_rows: list[dict], field_rows: list[dict], fault_rows: list[dict] | None) -> None:
    """``phenotypes.csv``, ``fields.csv`` and, with faults, ``faults.csv`` in ``gt``."""
    pd.DataFrame(pheno_rows).to_csv(gt / "phenotypes.csv", index=False)
    pd.DataFrame(field_rows).to_csv(gt / "fields.csv", index=False)
    if fault_rows is not None:
        pd.DataFrame(fault_rows, columns=["fault", "file", "well", "site", "channel"]).to_csv(
            gt / "faults.csv", index=False
        )


#: The plate map columns :func:`write_plate` needs (and writes to ``platemap.csv``).
_PLATEMAP_COLUMNS = ["Metadata_Well", "Metadata_CompoundID", "Metadata_SMILES", "Metadata_Concentration",
                     "Metadata_ControlType"]


def _check_plate_args(platemap: pd.DataFrame, *, plate_id: str, layout: str, sites: int, faults: bool) -> None:
    """The validation of :func:`write_plate` (its Raises section)."""
    if layout not in layout_names():
        raise ValueError(f"layout must be one of {layout_names()}, got {layout!r}")
    if layout != "loaddata":
        try:
            get_vendor(layout).image_name(plate_id, "A01", 1, 1)
        except NotImplementedError:
            raise ValueError(f"layout {layout!r} has no file-name rule (Vendor.image_name): the generator cannot "
                             f"write it") from None
    if not plate_id or "_" in plate_id or "/" in plate_id:
        raise ValueError(f"plate_id must be non-empty without '_' or '/', got {plate_id!r}")
    missing = [c for c in _PLATEMAP_COLUMNS if c not in platemap.columns]
    if missing:
        raise ValueError(f"platemap lacks columns {missing}; has {list(platemap.columns)}")
    if sites < 1:
        raise ValueError(f"sites must be >= 1, got {sites!r}")
    if faults and len(platemap) < len(FAULT_KINDS):
        raise ValueError(f"faults=True needs >= {len(FAULT_KINDS)} wells, platemap has {len(platemap)}")


def _place_faults(wells: list[str], *, plate_id: str, sites: int, seed: int) -> dict[tuple[str, int, int], str]:
    """Which (well, site, channel index) gets which fault: one of each of :data:`FAULT_KINDS`."""
    fault_at: dict[tuple[str, int, int], str] = {}
    frng = np.random.default_rng([seed, _crc(plate_id), 0xFA17])
    picked = frng.choice(len(wells), size=len(FAULT_KINDS), replace=False)
    for kind, w in zip(FAULT_KINDS, picked):
        fault_at[(wells[int(w)], int(frng.integers(1, sites + 1)), int(frng.integers(0, len(CHANNELS))))] = kind
    return fault_at


def _plate_shape(wells: list[str]) -> tuple[int, int]:
    """(rows, columns) of the smallest of a 96- or 384-well plate holding ``wells``."""
    rows, cols = max(ord(w[0]) - 64 for w in wells), max(int(w[1:]) for w in wells)
    return (16, 24) if rows > 8 or cols > 12 else (8, 12)


def _is_edge(well: str, rows: int, cols: int) -> bool:
    return well[0] in ("A", chr(64 + rows)) or int(well[1:]) in (1, cols)


def _well_state(row: pd.Series, wrng: np.random.Generator, *, edge: bool,
                plate_brightness: float) -> tuple[Phenotype, dict, float, float]:
    """One well's phenotype, its ground-truth row, its cell density and its brightness."""
    pheno, active = _well_phenotype(row, wrng)
    # cell count varies from well to well (seeding, growth; ~20 %), edge wells grow fewer
    density = float(wrng.lognormal(0.0, 0.2)) * (0.85 if edge else 1.0)
    brightness = plate_brightness * float(wrng.lognormal(0.0, 0.03))
    pheno_row = {"Metadata_Well": row["Metadata_Well"], "Metadata_CompoundID": row["Metadata_CompoundID"],
                 "Metadata_ControlType": row["Metadata_ControlType"],
                 "Metadata_Concentration": row["Metadata_Concentration"],
                 **{k: getattr(pheno, k) for k in (f.name for f in dataclasses.fields(Phenotype))},
                 "magnitude": pheno.magnitude(), "active": active}
    return pheno, pheno_row, density, brightness


class _FieldFiles:
    """Writes each field's channel files in one layout, with the plate's faults, and collects
    the LoadData rows (:func:`_write_load_data`) and the faults written."""

    def __init__(self, *, plate_dir: Path, layout: str, plate_id: str, seed: int, size: int,
                 fault_at: dict[tuple[str, int, int], str]) -> None:
        self.plate_dir, self.layout, self.plate_id, self.seed, self.size = plate_dir, layout, plate_id, seed, size
        self.fault_at = fault_at
        self.guids = [_guid(seed, plate_id, ch) for ch in range(len(CHANNELS))]
        self.fault_rows: list[dict[str, object]] = []
        self.load_rows: list = []

    def write_field(self, image: np.ndarray, *, well: str, site: int) -> None:
        """Write the (5, Y, X) uint16 ``image`` of one field, one file per channel."""
        load_row: dict[str, object] = {"Metadata_Plate": self.plate_id, "Metadata_Well": well, "Metadata_Site": site}
        for ch in range(len(CHANNELS)):
            rel = _image_relpath(self.layout, self.plate_id, well, site, ch, self.guids[ch])
            load_row[f"FileName_Orig{CHANNELS[ch]}"] = Path(rel).name
            load_row[f"PathName_Orig{CHANNELS[ch]}"] = str(Path(rel).parent)
            self._write_channel(image[ch], rel, well=well, site=site, ch=ch)
        self.load_rows.append(load_row)

    def _write_channel(self, data: np.ndarray, rel: str, *, well: str, site: int, ch: int) -> None:
        path = self.plate_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = self.fault_at.get((well, site, ch))
        if kind is not None:
            self.fault_rows.append({"fault": kind, "file": rel, "well": well, "site": site, "channel": CHANNELS[ch]})
        if kind == "missing_channel":
            return
        if kind == "zero_bytes":
            path.write_bytes(b"")
            return
        full = data
        if kind == "wrong_dtype":
            data = (data >> 8).astype(np.uint8)
        elif kind == "wrong_shape":
            data = data[: self.size // 2]
        _write_tiff(path, data)
        if kind == "truncated":
            raw = path.read_bytes()
            path.write_bytes(raw[: len(raw) // 2])
        if kind == "duplicate_site":
            dup_rel = _duplicate_relpath(self.layout, rel, self.plate_id, well, site, ch, self.seed)
            _write_tiff(self.plate_dir / dup_rel, data)
            self.fault_rows[-1]["file"] = dup_rel
            if self.layout == "loaddata":
                self.load_rows.append(("dup", ch, dup_rel))
        if self.layout == "imagexpress":
            thumb = self.plate_dir / f"{self.plate_id}_{well}_s{site}_w{ch + 1}_thumb{self.guids[ch]}.tif"
            _write_tiff(thumb, full[::4, ::4])


def _render_wells(platemap: pd.DataFrame, files: _FieldFiles, *, labels: Path | None, illumination: np.ndarray,
                  seed: int, plate_id: str, sites: int, size: int, nucleus_radius: float, defocus_rate: float,
                  bleed_through: float, rows: int, cols: int) -> tuple[list[dict], list[dict]]:
    """Render every field of the plate, well by well, and write its files (and, with
    ``labels``, its label images); returns the ground-truth rows per well and per field."""
    plate_brightness = float(np.random.default_rng([seed, _crc(plate_id), 0xB0B]).lognormal(0.0, 0.05))
    pheno_rows, field_rows = [], []
    for _, row in platemap.iterrows():
        well = row["Metadata_Well"]
        pheno, pheno_row, density, brightness = _well_state(
            row, _field_rng(seed, plate_id, well, 0), edge=_is_edge(well, rows, cols),
            plate_brightness=plate_brightness)
        pheno_rows.append(pheno_row)
        for site in range(1, sites + 1):
            frng = _field_rng(seed, plate_id, well, site)
            blurred = bool(frng.random() < defocus_rate)
            image, nuclei, cells = render_field(
                pheno, size=size, nucleus_radius=nucleus_radius, rng=frng, illumination=illumination,
                out_of_focus=blurred, cell_density=density, brightness=brightness, bleed_through=bleed_through,
            )
            field_rows.append({"Metadata_Well": well, "Metadata_Site": site,
                               "n_nuclei": int(nuclei.max()), "out_of_focus": blurred})
            if labels is not None:
                (labels / f"{well}_s{site}.npz").write_bytes(_npz_bytes(nuclei=nuclei, cells=cells))
            files.write_field(image, well=well, site=site)
    return pheno_rows, field_rows


#: The stain names an instrument records for channels 1..5 (DNA, ER, RNA, AGP, Mito): MetaXpress
#: wave names (filter sets, Bray et al. 2016) and Harmony channel names (the JUMP Phenix setup).
_WAVE_NAMES = ("DAPI", "FITC", "Cy3", "Texas Red", "Cy5")
_HARMONY_NAMES = ("HOECHST 33342", "Alexa 488", "488 long", "Alexa 568", "Alexa 647")


def _write_instrument_metadata(plate_dir: Path, layout: str, *, plate_id: str, rows: int, cols: int, sites: int) -> None:
    """What the instrument writes beside the images and readers map stains from: a MetaXpress
    ``<plate>.HTD`` (ImageXpress) or a Harmony ``Images/Index.idx.xml`` (Phenix; channels only)."""
    if layout == "imagexpress":
        lines = ['"HTSInfoFile", Version 1.0', f'"Description", "cmcl generator plate {plate_id}"',
                 f'"XWells", {cols}', f'"YWells", {rows}', f'"Sites", {"TRUE" if sites > 1 else "FALSE"}',
                 f'"XSites", {sites}', '"YSites", 1', '"Waves", TRUE', f'"NWavelengths", {len(CHANNELS)}',
                 *[f'"WaveName{k + 1}", "{n}"' for k, n in enumerate(_WAVE_NAMES)], '"EndFile"']
        (plate_dir / f"{plate_id}.HTD").write_text("\r\n".join(lines) + "\r\n")
    elif layout == "phenix":
        images = "".join(f"<Image><Row>1</Row><Col>1</Col><FieldID>1</FieldID><ChannelID>{k + 1}</ChannelID>"
                         f"<ChannelName>{n}</ChannelName></Image>" for k, n in enumerate(_HARMONY_NAMES))
        (plate_dir / "Images").mkdir(exist_ok=True)
        (plate_dir / "Images" / "Index.idx.xml").write_text(
            '<?xml version="1.0" encoding="utf-8"?>\n<EvaluationInputData xmlns="http://www.perkinelmer.com/PEHH/HarmonyV5">'
            f"<Plates><Plate><PlateID>{plate_id}</PlateID></Plate></Plates><Images>{images}</Images>"
            "</EvaluationInputData>\n")


def _duplicate_relpath(layout: str, rel: str, plate_id: str, well: str, site: int, ch: int, seed: int) -> str:
    """A second file name that maps to the same (well, site, channel) as ``rel``."""
    if layout == "imagexpress":
        return _image_relpath(layout, plate_id, well, site, ch, _guid(seed, plate_id, ch, "duplicate"))
    if layout == "phenix":
        return rel.replace("sk1fk1fl1", "sk2fk1fl1")
    if layout == "loaddata":
        return rel.replace(".tiff", "_copy.tiff")
    return f"duplicate/{rel}"  # a registered layout: the same name in a subfolder


def _write_load_data(path: Path, load_rows: list) -> None:
    """Write ``load_data.csv``; a ``('dup', ch, rel)`` marker repeats the next field's row with one
    channel's file replaced (a duplicate site)."""
    out: list[dict[str, object]] = []
    pending: list[tuple[int, str]] = []
    for item in load_rows:
        if isinstance(item, tuple):
            pending.append(item[1:])
            continue
        out.append(item)
        for ch, rel in pending:
            dup = dict(item)
            dup[f"FileName_Orig{CHANNELS[ch]}"] = Path(rel).name
            dup[f"PathName_Orig{CHANNELS[ch]}"] = str(Path(rel).parent)
            out.append(dup)
        pending = []
    cols = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    cols += [f"FileName_Orig{c}" for c in CHANNELS] + [f"PathName_Orig{c}" for c in CHANNELS]
    pd.DataFrame(out, columns=cols).to_csv(path, index=False)


def generate(
    out_dir: Path,
    *,
    layout: Layout = "imagexpress",
    plate_id: str = "P1",
    plate_format: Literal[96, 384] = 96,
    n_wells: int = 96,
    sites: int = 1,
    size: int = 256,
    seed: int = 0,
    faults: bool = False,
    library: pd.DataFrame | None = None,
) -> Path:
    """Design one plate from ``library`` (default: the shipped one), keep its first ``n_wells``
    wells in row-major order and write it with :func:`write_plate`; returns the plate folder.

    Raises
    ------
    ValueError
        If ``n_wells`` is not in ``1..plate_format`` or :func:`write_plate` refuses.
    """
    from pipeline.chem.library import load_compound_library

    if not 1 <= n_wells <= plate_format:
        raise ValueError(f"n_wells must be in 1..{plate_format}, got {n_wells!r}")
    lib = load_compound_library() if library is None else library
    platemap = design_plates(lib, plate_format=plate_format, seed=seed)[0]
    order = {w: i for i, w in enumerate(well_names(plate_format))}
    keep = platemap["Metadata_Well"].map(order) < n_wells
    platemap = platemap[keep].reset_index(drop=True)
    return write_plate(Path(out_dir), platemap, plate_id=plate_id, layout=layout, sites=sites,
                       size=size, seed=seed, faults=faults)


def generate_demo(
    out_dir: Path,
    *,
    n_plates: int = 2,
    plate_format: Literal[96, 384] = 384,
    n_compounds: int | None = None,
    sites: int = 1,
    size: int = 256,
    nucleus_radius: float = 8.0,
    seed: int = 0,
) -> list[Path]:
    """Design ``n_plates`` plates of the shipped library and write them (ImageXpress layout,
    plates ``DEMO-1``, ``DEMO-2``, ...); returns the plate folders."""
    from pipeline.chem.library import load_compound_library

    maps = design_plates(load_compound_library(), n_plates=n_plates, plate_format=plate_format,
                         n_compounds=n_compounds, seed=seed)
    return [
        write_plate(Path(out_dir), m, plate_id=f"DEMO-{i + 1}", sites=sites, size=size,
                    nucleus_radius=nucleus_radius, seed=seed)
        for i, m in enumerate(maps)
    ]


def read_ground_truth(plate_dirs: Sequence[Path]) -> pd.DataFrame | None:
    """The per-well ground truth of generated plates, one table over all of them.

    Parameters
    ----------
    plate_dirs : sequence of pathlib.Path
        Plate folders written by :func:`write_plate` (the plate id is the folder name).

    Returns
    -------
    DataFrame or None
        ``ground_truth/phenotypes.csv`` of every folder that has one, with a leading
        ``Metadata_Plate`` column; None when none has it.
    """
    parts = []
    for d in plate_dirs:
        path = Path(d) / "ground_truth" / "phenotypes.csv"
        if path.is_file():
            df = pd.read_csv(path)
            df.insert(0, "Metadata_Plate", Path(d).name)
            parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else None
