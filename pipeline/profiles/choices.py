"""The profile stage's choice lists and defaults, declared once.

Each choice is a ``Literal`` (for type checkers and signatures) and the tuple derived from it
(for validation, error messages, CLI help and docs). This module imports nothing but
:mod:`typing`, so the ``cmcl`` command line can read it at start-up without paying for pandas.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["DEFAULT_NEGCON", "AggregateOperation", "AGGREGATE_OPERATIONS"]

#: Default negative-control labels (matched against control type and compound ID): JUMP's
#: ``negcon``, solvent names, and ``Negative`` (the cell-injury screen's ``Control Type``);
#: ``cmcl profile --negcon`` replaces them.
DEFAULT_NEGCON: tuple[str, ...] = ("DMSO", "negcon", "vehicle", "negative")

#: How a well's single-cell features become its profile (pycytominer ``aggregate``).
AggregateOperation = Literal["median", "mean"]
#: The values of :data:`AggregateOperation`.
AGGREGATE_OPERATIONS: tuple[str, ...] = get_args(AggregateOperation)
