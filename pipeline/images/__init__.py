"""Image stages: illumination, filters, segmentation, border handling, single-cell crops, QC pictures.

Modules
-------
borders       The field's edge: which nuclei touch it, and crops cut from windows that cross it.
choices       The choice lists of the image stages (illumination, segmentation, crop borders), declared once.
crops         Single-cell crops: fixed-size, all channels, centred on each nucleus (their arrays: pipeline.store.crops).
filters       Separable filters of 2-D float32 images with ``scipy.ndimage``'s exact values, faster.
histo         Exact percentiles of integer images from histograms (``np.percentile``'s linear method).
illumination  Illumination correction in the manner of CellProfiler's CorrectIlluminationCalculate/Apply.
qc            Per-field QC and analysis choices: the focus score, the stain cells are grown on.
qc_plots      Pictures of a plate for quality control: per-well heatmaps and a field with its outlines.
segmentation  Nuclei and cell segmentation: one dispatch point, the classical default, cellpose, and scores.
stain_detect  Which channel holds the nuclear stain, from the pixels alone.

Names listed in ``__all__`` (what stages and flows use; helpers stay in their modules) are imported lazily:
importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['borders', 'choices', 'crops', 'filters', 'histo', 'illumination', 'qc', 'qc_plots', 'segmentation', 'stain_detect'],
    submod_attrs={
        'borders': ['PAD_VALUE', 'edge_labels', 'window_inside', 'cut_windows'],
        'choices': ['IlluminationMethod', 'ILLUMINATION_METHODS', 'Segmenter', 'SEGMENTERS', 'CropBorder', 'CROP_BORDERS'],
        'crops': ['crop_cells', 'crop_counts', 'field_tiles', 'check_field_arrays'],
        'filters': ['gaussian_filter', 'sobel'],
        'histo': ['block_percentiles', 'int_percentiles'],
        'illumination': ['estimate', 'estimate_dark', 'smooth', 'apply', 'flatness', 'compare_profiles', 'MeanAccumulator', 'BackgroundAccumulator'],
        'qc': ['focus_score', 'cyto_channel', 'CytoChannel', 'CYTO_CHANNELS', 'CYTO_PREFERENCE'],
        'qc_plots': ['well_summary', 'plate_heatmaps', 'field_composite'],
        'stain_detect': ['ChannelScore', 'NuclearPick', 'channel_scores', 'pick_nuclear', 'describe_scores'],
    },
)
