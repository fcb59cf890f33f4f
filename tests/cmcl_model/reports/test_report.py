import numpy as np
import pandas as pd
import pytest

from cmcl_model.reports.figures import crop_rgb, phenotype_classes
from cmcl_model.reports.validation import validate_json


def test_validate_json_subset():
    schema = {"type": "object", "required": ["a"], "additionalProperties": False,
              "properties": {"a": {"$ref": "#/$defs/f"}, "b": {"type": "array", "items": {"type": "integer"}}},
              "$defs": {"f": {"type": "number", "minimum": 0, "maximum": 1}}}
    validate_json({"a": 0.5, "b": [1, 2]}, schema)
    for bad, msg in (({"a": 2}, "above"), ({}, "missing"), ({"a": 0.1, "c": 1}, "undeclared"),
                     ({"a": 0.1, "b": [1.5]}, r"\$\.b\[0\]"), ({"a": float("nan")}, "finite"), ({"a": True}, "number")):
        with pytest.raises(ValueError, match=msg):
            validate_json(bad, schema)


def test_crop_rgb_range_and_errors():
    x = np.random.default_rng(0).integers(0, 5000, size=(3, 5, 8, 8)).astype(np.uint16)
    rgb = crop_rgb(x)
    assert rgb.shape == (3, 8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    with pytest.raises(ValueError, match="shape"):
        crop_rgb(x[:, :3])
    with pytest.raises(ValueError, match="unknown channels"):
        crop_rgb(x, channels=("DNA", "X", "ER"))


def test_phenotype_classes_from_explicit_ground_truth(tmp_path):
    from pipeline.synthetic import read_ground_truth

    src = tmp_path / "SYN01"
    (src / "ground_truth").mkdir(parents=True)
    assert read_ground_truth([src]) is None  # a folder without ground truth
    pd.DataFrame({
        "Metadata_Well": ["A01", "A02", "A03"], "active": [False, True, True],
        "nuclear_area": [1.0, 2.0, 1.0], "dna_intensity": [1.0, 1.1, 1.0], "toxicity": [0.0, 0.0, 0.5],
    }).to_csv(src / "ground_truth" / "phenotypes.csv", index=False)
    cls = phenotype_classes(read_ground_truth([src]))
    assert cls["Phenotype_Class"].tolist() == ["inactive", "nuclear_area", "toxicity"]
    assert (cls["Metadata_Plate"] == "SYN01").all()
    with pytest.raises(ValueError, match="active"):
        phenotype_classes(pd.DataFrame({"Metadata_Plate": ["P"], "Metadata_Well": ["A01"]}))
