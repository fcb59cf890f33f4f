import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cmcl_model.data.crops import ChunkedCropReader
from cmcl_model.data.pairs import PairDataset, UniqueCompoundBatchSampler, collate_pairs, graphs_from_arrow, treatment_crops
from pipeline.chem.graphs import smiles_to_graph


def test_graphs_from_arrow_matches_rdkit(syn_store):
    table = pq.read_table(syn_store.table_path("graphs"))
    graphs = graphs_from_arrow(table)
    assert len(graphs) == table.num_rows
    for key, smi in zip(table.column("Metadata_InChIKey").to_pylist()[:10], table.column("Metadata_SMILES").to_pylist()):
        ref = smiles_to_graph(smi)
        g = graphs[key]
        assert g.x.dtype == torch.long and g.x.shape == ref["node_feat"].shape
        np.testing.assert_array_equal(g.x.numpy(), ref["node_feat"])
        np.testing.assert_array_equal(g.edge_index.numpy(), ref["edge_index"])
        np.testing.assert_array_equal(g.edge_attr.numpy(), ref["edge_feat"])


def test_graphs_from_arrow_slices_of_a_table(syn_store):
    table = pq.read_table(syn_store.table_path("graphs"))
    full = graphs_from_arrow(table)
    part = graphs_from_arrow(table.slice(5, 7))
    for key, g in part.items():
        assert torch.equal(g.x, full[key].x) and torch.equal(g.edge_index, full[key].edge_index)


def test_only_treatments_are_paired(syn_store):
    trt, dmso = treatment_crops(syn_store)
    pm = syn_store.read("platemap")
    neg = set(zip(pm.loc[pm.Metadata_ControlType == "negcon", "Metadata_Plate"], pm.loc[pm.Metadata_ControlType == "negcon", "Metadata_Well"]))
    assert not neg & set(zip(trt.Metadata_Plate, trt.Metadata_Well))
    assert len(dmso) == 2 * 4 * 8
    ds = PairDataset(syn_store, norm_crops=64)
    assert len(ds) == 96 and len(set(ds.keys)) == 96


def test_dataset_never_loads_the_whole_array(syn_store):
    ds = PairDataset(syn_store, crops_per_sample=3, norm_crops=64, cache_bytes=1)
    for idx in range(5):
        g, x = ds[idx]
        assert x.shape == (3, 5, 16, 16) and x.dtype == torch.float32
    for plate, reader in ds.readers.items():
        n = reader.shape[0]
        assert reader.max_rows_per_read <= reader.chunk_len < n
        assert len(reader._cache) <= 1  # cache bounded by bytes
        assert reader._rows is not None and reader._rows.direct  # sharded: no zarr round trip


def test_reader_reads_rows_in_order(syn_store):
    import zarr

    plate = syn_store.read("platemap").Metadata_Plate.iloc[0]
    reader = ChunkedCropReader(syn_store.crops_zarr(plate))
    rows = np.array([700, 3, 255, 256, 3])
    ref = zarr.open_group(str(syn_store.crops_zarr(plate)), mode="r")["crops"]
    np.testing.assert_array_equal(reader.read(rows), np.stack([ref[r] for r in rows]))
    with pytest.raises(IndexError, match="out of range"):
        reader.read(np.array([10_000]))


def test_sampling_is_a_function_of_seed_epoch_index(syn_store):
    ds = PairDataset(syn_store, crops_per_sample=4, augment=True, norm_crops=64)
    a = ds[3][1]
    assert torch.equal(a, ds[3][1])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[3][1])


def test_dmso_normalisation(syn_store):
    ds = PairDataset(syn_store, norm_crops=64)
    _, dmso = treatment_crops(syn_store)
    for plate in ds.plates:
        rows = dmso.loc[dmso.Metadata_Plate == plate, "Metadata_CropIndex"].to_numpy()
        x = ds.normalization[plate].apply(ds.readers[plate].read(rows))
        assert np.abs(x.mean(axis=(0, 2, 3))).max() < 0.2
        assert np.abs(x.std(axis=(0, 2, 3)) - 1).max() < 0.2


def test_batch_sampler_never_repeats_a_compound():
    groups = ["a", "b", "a", "c", "a", "d", "b", "e"]
    sampler = UniqueCompoundBatchSampler(groups, 3, shuffle=True, drop_last=False, seed=0)
    seen = []
    for epoch in range(5):
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert len({groups[i] for i in batch}) == len(batch)
            seen += batch
    assert sorted(seen) == sorted(list(range(8)) * 5)
    sampler.set_epoch(2)
    b2 = list(sampler)
    sampler.set_epoch(2, start_batch=1)
    assert list(sampler) == b2[1:]


def test_collate_and_sampler_over_dataset(syn_store):
    ds = PairDataset(syn_store, crops_per_sample=2, norm_crops=64)
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=UniqueCompoundBatchSampler(ds.keys, 16, seed=0), collate_fn=collate_pairs
    )
    batch = next(iter(loader))
    assert batch.crops.shape == (16, 2, 5, 16, 16)
    assert batch.graphs.num_graphs == 16
