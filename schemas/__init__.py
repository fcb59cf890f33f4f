"""Declarations of every table, array group and path a cmcl store holds.

This package holds data only (JSON files); :mod:`pipeline.store.schema` loads and enforces them.
"""
