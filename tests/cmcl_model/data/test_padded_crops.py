"""Training can leave out the crops padded at the field's edge (``exclude_padded_crops``)."""

import shutil

import numpy as np
import pytest

from cmcl_model.data.pairs import PairDataset, treatment_crops
from cmcl_model.train.config import TrainConfig
from pipeline.store.schema import read_table, write_table
from pipeline.store.paths import Store


@pytest.fixture(scope="module")
def flagged_store(syn_store, tmp_path_factory):
    """A copy of ``syn_store`` with every third crop flagged ``Metadata_CropPadded``."""
    store = Store(shutil.copytree(syn_store.root, tmp_path_factory.mktemp("padded") / "store"))
    for path in store.table_files("cells"):
        cells = read_table("cells", path)
        cells["Metadata_CropPadded"] = cells["Metadata_CropIndex"] % 3 == 0
        write_table(cells, "cells", path)
    return store


def test_setting_drops_exactly_the_flagged_rows(flagged_store):
    cells = flagged_store.read("cells")
    assert cells["Metadata_CropPadded"].any() and not cells["Metadata_CropPadded"].all()
    key = ["Metadata_Plate", "Metadata_CropIndex"]
    all_trt, all_dmso = treatment_crops(flagged_store)
    trt, dmso = treatment_crops(flagged_store, exclude_padded=True)
    for full, kept in ((all_trt, trt), (all_dmso, dmso)):
        flags = full.merge(cells[key + ["Metadata_CropPadded"]], on=key)["Metadata_CropPadded"].to_numpy()
        assert len(flags) == len(full) and flags.any()
        expected = full[~flags].reset_index(drop=True)
        assert kept.reset_index(drop=True).equals(expected)
    # the dataset: the rows it samples from are the unflagged treatment rows, and nothing else
    ds = PairDataset(flagged_store, norm_crops=64, exclude_padded_crops=True)
    plate_of = dict(enumerate(ds.plates))
    sampled = {(plate_of[int(p)], int(r)) for c in ds.crops for p, r in c}
    assert sampled == set(zip(trt.Metadata_Plate, trt.Metadata_CropIndex))
    default = PairDataset(flagged_store, norm_crops=64)  # default: padded crops kept
    assert sum(len(c) for c in default.crops) == len(all_trt) > len(trt)


def test_train_config_setting_parses_and_defaults_to_keeping_padded_crops():
    assert TrainConfig().exclude_padded_crops is False
    assert TrainConfig.parse_overrides(["exclude_padded_crops=true"]) == {"exclude_padded_crops": True}


def test_a_cells_table_without_the_flag_fails_in_one_line(syn_store, tmp_path):
    import pyarrow.parquet as pq

    store = Store(shutil.copytree(syn_store.root, tmp_path / "store"))
    path = store.table_files("cells")[0]
    pq.write_table(pq.read_table(path).drop_columns(["Metadata_CropPadded"]), path)  # as ingested before the flag
    with pytest.raises(ValueError, match="no Metadata_CropPadded column.*re-ingest") as info:
        treatment_crops(store, exclude_padded=True)
    assert "\n" not in str(info.value)
    assert len(treatment_crops(store)[0]) > 0  # without the setting, such a store still trains
    np.testing.assert_array_equal(treatment_crops(store)[0]["Metadata_CropIndex"],
                                  treatment_crops(syn_store)[0]["Metadata_CropIndex"])


def test_controls_are_found_as_profiling_finds_them(syn_store, tmp_path):
    """A plate map that calls its DMSO wells 'vehicle' (or leaves them 'trt' with compound ID
    DMSO) gives the same treatment and control crops as one that says 'negcon'."""
    ref_trt, ref_dmso = treatment_crops(syn_store)
    assert len(ref_dmso) > 0
    for relabel in ({"Metadata_ControlType": "vehicle"}, {"Metadata_ControlType": "trt", "Metadata_CompoundID": "DMSO"}):
        store = Store(shutil.copytree(syn_store.root, tmp_path / "_".join(relabel.values()) / "store"))
        for path in store.table_files("platemap"):
            pm = read_table("platemap", path)
            neg = pm["Metadata_ControlType"] == "negcon"
            for col, value in relabel.items():
                pm.loc[neg, col] = value
            write_table(pm, "platemap", path)
        trt, dmso = treatment_crops(store)
        assert trt.equals(ref_trt) and dmso.equals(ref_dmso), relabel


def test_training_uses_the_labels_the_store_was_given(syn_store, tmp_path):
    """A map whose DMSO wells say 'solvent' (no default label matches their type or ID) trains without controls until the
    store is given ``--negcon solvent``; then its crops are exactly those of a 'negcon' map."""
    from pipeline.profiles.controls import record_negcon, store_negcon

    ref_trt, ref_dmso = treatment_crops(syn_store)
    store = Store(shutil.copytree(syn_store.root, tmp_path / "store"))
    for path in store.table_files("platemap"):
        pm = read_table("platemap", path)
        neg = pm["Metadata_ControlType"] == "negcon"
        pm.loc[neg, "Metadata_ControlType"] = "solvent"
        pm.loc[neg, "Metadata_CompoundID"] = "0.1% solvent"
        write_table(pm, "platemap", path)
    assert len(treatment_crops(store)[1]) == 0
    assert record_negcon(store, "Solvent, ") == ("Solvent",)
    assert store_negcon(Store(store.root)) == ("Solvent",)  # kept by the store, read afresh
    trt, dmso = treatment_crops(store)
    assert trt.equals(ref_trt) and dmso.equals(ref_dmso)
    assert record_negcon(store, None) == ("Solvent",)  # None keeps the store's own
