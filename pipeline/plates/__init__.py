"""Plates as microscopes and CellProfiler users write them: vendor layouts, discovery, wells, plate maps, channel maps.

Modules
-------
acquisition    What the microscope wrote about a plate, vendor-neutral: channels, stains, pixel size, objective.
channel_check  Check a plate's channel map against its pixels before any field is written.
channel_maps   Channel maps: which vendor channel holds which stain (``DNA=1,ER=2``, TOML/YAML, raw ``ch<N>``).
discovery      Discover the images of a plate folder through the vendor layouts; its ``platemap.csv``.
platemaps      Plate maps as the field writes them: JUMP / LINCS (Broad) style, beside cmcl's ``platemap.csv``.
vendors        Vendor layouts, one module each (imagexpress, phenix, loaddata), registered once.
wells          Wells and plate formats.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['acquisition', 'channel_check', 'channel_maps', 'discovery', 'platemaps', 'vendors', 'wells'],
    submod_attrs={
        'acquisition': ['ChannelInfo', 'Acquisition', 'AcquisitionError', 'stain_role', 'auto_channel_map',
                        'describe_channel_map'],
        'channel_check': ['ChannelMapError', 'check_channels'],
        'channel_maps': ['CHANNEL_SOURCES', 'parse_channel_map', 'read_channel_map'],
        'discovery': ['PlateListing', 'discover_plate', 'raw_images', 'read_platemap', 'fingerprint_files'],
        'platemaps': ['PlatemapConfig', 'read_platemap_config', 'load_platemap'],
        'vendors': ['Layout', 'LAYOUTS', 'register', 'get_vendor', 'layout_names'],
        'wells': ['well_name', 'split_well', 'PLATE_FORMATS', 'plate_format_of'],
    },
)
