"""Neural network modules: graph and image encoders, the cross-modal model, contrastive objectives.

Modules
-------
encoders  Graph and image encoders for the molecule <-> cell-image contrastive model.
losses    Contrastive objectives: graph-image contrastive (GIC), masked graph modelling (MGM),
model     The cross-modal model: graph encoder + image encoder + projection heads (+ MGM / GGIM heads).

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['encoders', 'losses', 'model'],
    submod_attrs={
        'encoders': ['ATOM_FEATURE_DIMS', 'BOND_FEATURE_DIMS', 'AtomEncoder', 'BondEncoder', 'GINEConv', 'GINEncoder', 'BasicBlock', 'ImageEncoder', 'ProfileEncoder'],
        'losses': ['info_nce', 'margin_loss', 'GICLoss', 'mgm_loss', 'ggim_loss', 'hard_negatives'],
        'model': ['ProjectionHead', 'CMCLModel', 'frozen_running_stats', 'HeadBuilder', 'mgm_head', 'ggim_head'],
    },
)
