"""cellpose backend: runs only with the optional extra; an untrained local model exercises the path offline."""

import numpy as np
import pytest

from pipeline.images.segmentation.dispatch import segment_field


def test_missing_weights_are_refused_without_download(tmp_path):
    from pipeline.images.segmentation.cellpose import load_cellpose_model

    with pytest.raises(FileNotFoundError, match="cyto3"):
        load_cellpose_model("cyto3")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.pt")):
        load_cellpose_model(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="cellpose_model"):
        segment_field(np.zeros((8, 8)), np.zeros((8, 8)), segmenter="cellpose")
    with pytest.raises(ValueError, match="'classical', 'cellpose'"):
        segment_field(np.zeros((8, 8)), np.zeros((8, 8)), segmenter="stardist")


def test_ingest_settings_check_the_weights_path(tmp_path):
    from pipeline.ingest.run import IngestSettings

    with pytest.raises(FileNotFoundError, match="nuclei"):
        IngestSettings(segmenter="cellpose", cellpose_model="nuclei")
    with pytest.raises(ValueError, match="'classical', 'cellpose'"):
        IngestSettings(segmenter="watershed")


def test_local_untrained_model_runs_offline(tmp_path):
    pytest.importorskip("cellpose")
    from cellpose import models

    from pipeline.synthetic import phenotype_from_smiles, render_field

    path = tmp_path / "tiny_model"
    models.CellposeModel(gpu=False, pretrained_model=False).net.save_model(str(path))
    image, _, _ = render_field(phenotype_from_smiles("CCO"), size=96, rng=np.random.default_rng(0))
    nuclei, cells = segment_field(image[0], image[3], segmenter="cellpose", cellpose_model=str(path),
                                  cellpose_cell_model=str(path), cellpose_diameter=17.0)
    assert nuclei.dtype == np.uint32 and cells.dtype == np.uint32 and nuclei.shape == (96, 96)
    # whatever an untrained net finds, every nucleus has exactly one cell containing it
    assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])
    assert set(np.unique(cells)) <= set(np.unique(nuclei))


def test_cells_for_nuclei_split_shared_cells():
    pytest.importorskip("skimage")
    from pipeline.images.segmentation.cellpose import _cells_for_nuclei

    masks = np.zeros((20, 40), np.int32)
    masks[2:18, 2:38] = 1  # one cellpose cell holding two nuclei
    masks[2:18, 39:40] = 2  # a cell with no nucleus: dropped
    nuclei = np.zeros_like(masks, dtype=np.uint32)
    nuclei[8:12, 6:10] = 1
    nuclei[8:12, 30:34] = 2
    cells = _cells_for_nuclei(nuclei, masks)
    assert set(np.unique(cells)) == {0, 1, 2}
    assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])
    assert cells[:, 39].max() == 0
