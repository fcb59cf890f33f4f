"""Synthetic Cell Painting plates with a hidden structure -> morphology rule.

The generator stands in for a microscope and a compound screen so that cmcl can be built,
tested and demonstrated without real data. It has four layers, one module each:

1. :mod:`~pipeline.synthetic.phenotype`, :func:`phenotype_from_smiles`: a deterministic, hidden map from molecular structure (RDKit
   descriptors, substructure counts, hashed Morgan counts) to morphology parameters
   (:class:`Phenotype`). Similar structures get similar phenotypes; about 40 % of the shipped
   library is near-inactive at 10 uM. :func:`effective_phenotype` applies a Hill dose response.
2. :mod:`~pipeline.synthetic.design`, :func:`design_plates`: plate maps (DMSO spread over the plate, positive controls,
   compounds spilling over plates, replicates on different plates).
3. :mod:`~pipeline.synthetic.render`, :func:`render_field`: one 5-channel field (DNA, ER, RNA, AGP, Mito) plus its nuclei and cell
   label images, with camera offset, shot and read noise, illumination, debris, saturation and
   optional defocus. :func:`illumination_fields` gives the microscope's flat fields. The defaults
   are calibrated to real JUMP Phenix fields: :mod:`~pipeline.synthetic.calibration` holds the
   statistics and their tolerances (``docs/realism.md``).
4. :mod:`~pipeline.synthetic.layouts`, :func:`write_plate`: a plate folder in ImageXpress, Phenix/Harmony or LoadData layout, with
   ``platemap.csv``, ground truth and, optionally, deliberate file faults. :func:`generate` and
   :func:`generate_demo` are the entry points of the CLI.

All randomness flows from explicit seeds: a field's pixels depend only on
``(seed, plate_id, well, site)`` and the plate's illumination only on ``seed`` (one simulated
microscope), so results never depend on the order in which fields are generated, and the same
seed writes byte-identical files.
"""

from pipeline.store.paths import CHANNELS
from pipeline.synthetic.design import design_plates, well_names
from pipeline.synthetic.layouts import FAULT_KINDS, generate, generate_demo, read_ground_truth, write_plate
from pipeline.synthetic.phenotype import (
    DMSO,
    POSITIVE_CONTROL,
    POSITIVE_CONTROL_ID,
    POSITIVE_CONTROL_SMILES,
    Phenotype,
    effective_phenotype,
    hill,
    phenotype_from_smiles,
)
from pipeline.synthetic.render import DARK_OFFSET, illumination_fields, render_field

__all__ = [
    "CHANNELS",
    "DARK_OFFSET",
    "DMSO",
    "POSITIVE_CONTROL_ID",
    "POSITIVE_CONTROL_SMILES",
    "POSITIVE_CONTROL",
    "FAULT_KINDS",
    "Phenotype",
    "phenotype_from_smiles",
    "effective_phenotype",
    "hill",
    "design_plates",
    "well_names",
    "illumination_fields",
    "render_field",
    "write_plate",
    "generate",
    "generate_demo",
    "read_ground_truth",
]

