"""The nuclear stain found from the pixels: real Phenix fields (tests/data) and generated ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipeline.images.stain_detect import MARGIN, channel_scores, describe_scores, pick_nuclear

DATA = Path(__file__).resolve().parents[2] / "data"
SPARSE = DATA / "phenix_BR00121482" / "Images"  # a few cells; ch5 Hoechst, ch6 brightfield
DENSE = DATA / "phenix_BR00143976_C03" / "Images"  # ~40 cells; ch5 Hoechst, ch1 brightfield


def _field(folder: Path, channels=("1", "2", "3", "4", "5", "6")) -> tuple[np.ndarray, list[str]]:
    planes = [tifffile.imread(next(folder.glob(f"*-ch{c}sk1fk1fl1.tiff"))) for c in channels]
    return np.stack(planes), [f"ch{c}" for c in channels]


@pytest.mark.parametrize("folder,brightfield", [(SPARSE, "ch6"), (DENSE, "ch1")])
def test_hoechst_is_picked_on_real_fields_and_brightfield_never_scores(folder, brightfield):
    image, labels = _field(folder)
    scores = channel_scores(image, labels)
    pick = pick_nuclear([scores])
    assert pick.channel == "ch5", describe_scores(pick)
    by = {s.channel: s for s in scores}
    # brightfield: no bright object on a dark background (99.9th / 1st percentile ~1.1-1.2)
    assert not by[brightfield].fluorescent and pick.score_of(brightfield) == 0.0
    hoechst = by["ch5"]
    others = [s for c, s in by.items() if c not in ("ch5", brightfield)]
    # the measured facts the rule rests on: least foreground, smallest objects, sharpest edges
    assert hoechst.foreground < min(s.foreground for s in others)
    assert hoechst.object_area < min(s.object_area for s in others)
    assert hoechst.edge_contrast > max(s.edge_contrast for s in others)
    assert pick.score_of("ch5") - max(pick.score_of(c) for c in by if c != "ch5") >= MARGIN


@pytest.mark.parametrize("channels", [("2", "3", "5"), ("5", "6"), ("1", "2", "3", "4", "5")])
def test_subsets_of_the_dense_field_still_pick_hoechst(channels):
    """A 3-stain export (ch2, ch3, ch5), a 2-channel one, a 5-channel one without the last."""
    image, labels = _field(DENSE, channels)
    assert pick_nuclear([channel_scores(image, labels)]).channel == "ch5"


def test_identical_channels_give_no_pick_and_say_why():
    image, _ = _field(DENSE, ("5",))
    pick = pick_nuclear([channel_scores(np.concatenate([image] * 3), ["ch1", "ch2", "ch3"])])
    assert pick.channel is None and "first on only 0" in pick.reason
    assert describe_scores(pick).startswith("ch1 0.50")


def test_generated_fields_pick_the_dna_channel(tmp_path):
    from pipeline.synthetic import generate

    plate = generate(tmp_path, layout="phenix", plate_id="G1", n_wells=3, size=256, seed=3)
    fields = []
    for f in sorted((plate / "Images").glob("*-ch1sk1fk1fl1.tiff")):
        stack = np.stack([tifffile.imread(str(f).replace("-ch1", f"-ch{c}")) for c in range(1, 6)])
        fields.append(channel_scores(stack, [f"ch{c}" for c in range(1, 6)]))
    assert pick_nuclear(fields).channel == "ch1"  # the generator's DNA channel


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match=r"must be \(2, y, x\)"):
        channel_scores(np.zeros((3, 8, 8), np.uint16), ["ch1", "ch2"])
    with pytest.raises(ValueError, match="at least one field"):
        pick_nuclear([])


def test_tied_scores_share_their_mean_rank_as_scipy_ranks_them():
    from scipy.stats import rankdata

    from pipeline.images.stain_detect import _average_ranks

    rng = np.random.default_rng(0)
    for _ in range(500):
        values = rng.integers(0, 4, size=rng.integers(1, 8)).astype(float)
        np.testing.assert_array_equal(_average_ranks(values), rankdata(values, method="average"))
