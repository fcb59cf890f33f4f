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

Modules
-------
calibration  Statistics of real JUMP Phenix fields the renderer is calibrated to, with tolerances.
design       Plate maps: DMSO spread over the plate, positive controls, replicates on different plates.
layouts      Plate folders in a vendor layout (:mod:`pipeline.plates.vendors`), ground truth, deliberate faults.
phenotype    The hidden structure -> morphology rule and its dose response.
render       One field's pixels and labels; the simulated microscope's flat fields.
store        A small synthetic cmcl store with a learnable molecule -> phenotype link (tests, benchmarks).

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["calibration", "design", "layouts", "phenotype", "render", "store"],
    submod_attrs={
        "design": ["design_plates", "well_names"],
        "layouts": ["FAULT_KINDS", "write_plate", "generate", "generate_demo", "read_ground_truth"],
        "phenotype": ["DMSO", "POSITIVE_CONTROL", "POSITIVE_CONTROL_ID", "POSITIVE_CONTROL_SMILES", "Phenotype",
                      "effective_phenotype", "hill", "phenotype_from_smiles"],
        "render": ["DARK_OFFSET", "illumination_fields", "render_field"],
        "store": ["make_synthetic_store"],
    },
)
