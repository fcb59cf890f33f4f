"""Vendor layouts: how each instrument (or CellProfiler) writes a plate folder, one module each,
registered once.

Modules
-------
base         The :class:`~pipeline.plates.vendors.base.Vendor` interface and what every lister shares.
imagexpress  Molecular Devices ImageXpress / MetaXpress: file names and the ``.HTD`` file.
phenix       PerkinElmer/Revvity Phenix (Harmony export): file names, the Harmony index, TIFF descriptions, flat-field profiles.
loaddata     CellProfiler LoadData CSV: the images it names and its metadata columns.

The registry is :data:`Layout`: each name is the module ``pipeline.plates.vendors.<name>``, whose
``VENDOR`` implements the layout; the order is the detection order of ``layout='auto'`` (the
first vendor whose :meth:`~pipeline.plates.vendors.base.Vendor.detect` claims a folder reads it
alone, else every vendor known by its file names competes and the one matching most images
wins). Adding a vendor is one new module plus its name in :data:`Layout`; a vendor shipped
elsewhere (or a test's) is added with :func:`register`. ``docs/add-a-vendor.md`` shows both.

Importing this package imports no vendor module (the CLI lists :data:`LAYOUTS` at start-up);
:func:`vendors` imports them on first use.
"""

from __future__ import annotations

import importlib
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pipeline.plates.acquisition import Acquisition
    from pipeline.plates.vendors.base import Vendor

__all__ = ["Layout", "LAYOUTS", "VENDOR_MODULES", "vendors", "layout_names", "get_vendor", "register", "unregister",
           "find_acquisition"]

#: The shipped vendor layouts, one module each, in detection order: the registration line.
Layout = Literal["imagexpress", "phenix", "loaddata"]
LAYOUTS: tuple[str, ...] = typing.get_args(Layout)
#: Their modules, for code fingerprints (:func:`pipeline.store.provenance.code_fingerprint` follows
#: import statements, and these are imported by name on first use).
VENDOR_MODULES: tuple[str, ...] = tuple(f"{__name__}.{name}" for name in LAYOUTS)

#: Vendors added with :func:`register` (after the shipped ones, in the order added).
_REGISTERED: dict[str, Vendor] = {}


def vendors() -> tuple[Vendor, ...]:
    """Every vendor layout, in detection order: the shipped ones (:data:`LAYOUTS`), then the
    registered ones."""
    shipped = tuple(importlib.import_module(module).VENDOR for module in VENDOR_MODULES)
    return shipped + tuple(_REGISTERED.values())


def layout_names() -> tuple[str, ...]:
    """The names ``layout`` may take (besides ``'auto'``): :data:`LAYOUTS` and the registered ones."""
    return LAYOUTS + tuple(_REGISTERED)


def get_vendor(name: str) -> Vendor:
    """The vendor layout called ``name``.

    Raises
    ------
    ValueError
        If no vendor has that name (listing the names).
    """
    for vendor in vendors():
        if vendor.name == name:
            return vendor
    raise ValueError(f"layout {name!r} is not one of {', '.join(map(repr, layout_names()))}")


def register(vendor: Vendor) -> Vendor:
    """Add a vendor layout after the shipped ones; returns it (so a module may write
    ``VENDOR = register(Acme())``).

    Raises
    ------
    ValueError
        If a vendor of that name exists, or the name is ``'auto'`` or not lower case.
    """
    name = getattr(vendor, "name", None)
    if not isinstance(name, str) or not name or name != name.lower() or name == "auto":
        raise ValueError(f"a vendor's name must be a lower-case word other than 'auto'; got {name!r}")
    if name in layout_names():
        raise ValueError(f"a vendor layout named {name!r} is already registered")
    _REGISTERED[name] = vendor
    return vendor


def unregister(name: str) -> None:
    """Remove a vendor added with :func:`register` (shipped ones stay).

    Raises
    ------
    ValueError
        If ``name`` was not registered.
    """
    if name not in _REGISTERED:
        raise ValueError(f"no registered vendor layout named {name!r} (shipped layouts cannot be removed)")
    del _REGISTERED[name]


def find_acquisition(root: str | Path, layout: str) -> Acquisition | None:
    """The vendor metadata of a plate folder for ``layout`` (a Harmony index, an ``.HTD`` file,
    the LoadData CSV's columns), or None when there is none.

    Raises
    ------
    ValueError
        If ``layout`` names no vendor.
    AcquisitionError
        If the file found cannot be read.
    """
    return get_vendor(layout).read_metadata(Path(root))
