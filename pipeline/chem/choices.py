"""The chemistry stage's choice lists, declared once.

Each choice is a ``Literal`` (for type checkers and signatures) and the tuple derived from it
(for validation, error messages, CLI help and docs). This module imports nothing but
:mod:`typing`, so the ``cmcl`` command line can read it at start-up without paying for pandas
or RDKit.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["FragmentMode", "FRAGMENT_MODES", "ID_COLUMNS"]

#: How the parent is chosen among the fragments left after removing solvents and counter-ions:
#: ``"all"`` keeps every remaining fragment (ChEMBL), ``"largest"`` keeps the largest one
#: (most heavy atoms, organic preferred).
FragmentMode = Literal["all", "largest"]
#: The values of :data:`FragmentMode`, in order.
FRAGMENT_MODES: tuple[str, ...] = get_args(FragmentMode)

#: Identifier columns a compound table is searched for when no ``id_col`` is given, in priority
#: order (compared without case, blanks and punctuation): cmcl's own, generic ones, then the
#: field's registries (JUMP, Broad / Drug Repurposing Hub, LINCS, ChEMBL), then names.
ID_COLUMNS: tuple[str, ...] = (
    "Metadata_CompoundID", "compound_id", "id",
    "Metadata_JCP2022", "jcp2022", "Metadata_broad_sample", "broad_sample", "broad_id", "Metadata_pert_id", "pert_id",
    "chembl_id", "molecule_chembl_id", "Metadata_Name", "name", "compound_name", "title",
)
