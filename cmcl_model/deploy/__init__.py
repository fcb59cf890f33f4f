"""Encoders that leave the store: self-contained model files and molecule embeddings.

Modules
-------
embed   Molecule embeddings of a trained model for any compound file cmcl reads (``cmcl embed``).
export  Trained encoders that leave the store: one self-contained file per model.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['embed', 'export'],
    submod_attrs={
        'embed': ['EMBEDDING_COLUMNS', 'embed_records', 'embed_smiles', 'embed_file', 'write_embeddings'],
        'export': ['FORMAT', 'ExportError', 'featurizer_version', 'export_run', 'load_exported', 'exported_graph_encoder', 'load_encoder'],
    },
)
