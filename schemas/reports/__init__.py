"""Declarations of the reports cmcl writes (JSON-Schema subset; see :mod:`cmcl_model.reports.validation`)."""
