"""Broad-style (JUMP / LINCS) plate maps, on the real JUMP-Target-2 map in tests/data."""

import shutil
from pathlib import Path

import pytest

from pipeline.plates.platemaps import PlatemapConfig, load_platemap, read_platemap_config

JUMP = Path(__file__).resolve().parents[2] / "data" / "jump_compound_platemaps"


def _config(tmp_path: Path, barcode: str = "BR00121482") -> Path:
    (tmp_path / "barcode_platemap.csv").write_text(
        f"Assay_Plate_Barcode,Plate_Map_Name\n{barcode},JUMP-Target-2_compound_platemap\nOTHER,missing_map\n")
    cfg = tmp_path / "platemap.toml"
    cfg.write_text(f'platemap = "{JUMP}"\ncompound_metadata = "{JUMP / "JUMP-Target-2_compound_metadata.tsv"}"\n'
                   'barcode_platemap = "barcode_platemap.csv"\n')
    return cfg


def test_jump_target_2_map_gives_every_well_its_compound_and_dmso_controls(tmp_path):
    pm = load_platemap(read_platemap_config(_config(tmp_path)), plate="BR00121482")
    assert len(pm) == 384 and pm["Metadata_Well"].is_unique and set(pm["Metadata_Plate"]) == {"BR00121482"}
    dmso = pm[pm["Metadata_CompoundID"].isna()]
    assert len(dmso) == 64 and set(dmso["Metadata_ControlType"]) == {"negcon"} and dmso["Metadata_SMILES"].isna().all()
    compounds = pm[pm["Metadata_CompoundID"].notna()]
    assert len(compounds) == 320 and compounds["Metadata_SMILES"].notna().all()
    a01 = pm.set_index("Metadata_Well").loc["A01"]
    assert a01["Metadata_CompoundID"] == "BRD-K09338665-001-07-1" and a01["Metadata_SMILES"] == "CCCCCCCCO"
    # the metadata's own control types: poscon_cp / poscon_diverse / poscon_orf -> poscon
    assert set(compounds["Metadata_ControlType"]) == {"trt", "poscon"}


def test_plate_map_file_given_directly_and_column_overrides(tmp_path):
    renamed = tmp_path / "map.tsv"
    renamed.write_text((JUMP / "JUMP-Target-2_compound_platemap.tsv").read_text().replace("well_position", "Pos", 1))
    shutil.copy(JUMP / "JUMP-Target-2_compound_metadata.tsv", tmp_path / "meta.tsv")
    cfg = tmp_path / "c.toml"
    cfg.write_text('platemap = "map.tsv"\ncompound_metadata = "meta.tsv"\n[columns]\nwell = "Pos"\n')
    assert len(load_platemap(read_platemap_config(cfg), plate="P")) == 384
    no_meta = load_platemap(PlatemapConfig(platemap=JUMP / "JUMP-Target-2_compound_platemap.tsv"), plate="P")
    assert no_meta["Metadata_SMILES"].isna().all() and (no_meta["Metadata_ControlType"] == "negcon").sum() == 64


def test_bad_plate_maps_fail_naming_the_file(tmp_path):
    cfg = _config(tmp_path)
    with pytest.raises(ValueError, match=r"barcode_platemap.csv: plate 'NOPE' is not listed"):
        load_platemap(read_platemap_config(cfg), plate="NOPE")
    with pytest.raises(ValueError, match=r"no plate map missing_map.txt/.tsv/.csv for plate OTHER"):
        load_platemap(read_platemap_config(cfg), plate="OTHER")
    meta = tmp_path / "meta.tsv"
    meta.write_text("broad_sample\tsmiles\nBRD-K09338665-001-07-1\tCCCCCCCCO\n")
    with pytest.raises(ValueError, match=r"compound id\(s\) are not in .*meta.tsv"):
        load_platemap(PlatemapConfig(platemap=JUMP / "JUMP-Target-2_compound_platemap.tsv", compound_metadata=meta),
                      plate="P")
    bad = tmp_path / "bad.toml"
    bad.write_text('platemap = "nowhere.tsv"\n')
    with pytest.raises(ValueError, match=r"bad.toml: platemap .*nowhere.tsv does not exist"):
        read_platemap_config(bad)
