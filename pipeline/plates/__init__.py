"""Plates as microscopes and CellProfiler users write them: discovery, vendor metadata, plate maps, channel maps.

Modules
-------
acquisition    What the microscope wrote about a plate: channel names, wavelengths, pixel size, objective.
channel_check  Check a plate's channel map against its pixels before any field is written.
discovery      Discover the images of a plate folder, in the layouts microscopes and CellProfiler users have.
platemaps      Plate maps as the field writes them: JUMP / LINCS (Broad) style, beside cmcl's ``platemap.csv``.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['acquisition', 'channel_check', 'discovery', 'platemaps'],
    submod_attrs={
        'acquisition': ['ChannelInfo', 'Acquisition', 'AcquisitionError', 'stain_role', 'auto_channel_map', 'describe_channel_map', 'read_harmony_index', 'read_htd', 'loaddata_acquisition', 'find_acquisition', 'flatfield_image', 'tiff_channel_name', 'tiff_acquisition'],
        'channel_check': ['ChannelMapError', 'SAMPLE_FIELDS', 'FAR_BELOW', 'sample_fields', 'check_channels'],
        'discovery': ['Layout', 'LAYOUTS', 'PlateListing', 'PlateLayoutError', 'CHANNEL_SOURCES', 'raw_channel', 'plate_channels', 'raw_images', 'parse_channel_map', 'read_channel_map', 'discover_plate', 'read_platemap', 'well_name', 'PLATE_FORMATS', 'plate_format_of', 'split_well', 'fingerprint_files'],
        'platemaps': ['COLUMN_MAP', 'PlatemapConfig', 'read_platemap_config', 'broad_platemap', 'load_platemap'],
    },
)
