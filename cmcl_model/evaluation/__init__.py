"""Evaluation of a run: retrieval both ways with baselines, metrics, probes, zero-shot queries.

Modules
-------
metrics        Cross-modal retrieval metrics.
probing        Downstream probe: do frozen molecule embeddings of a run predict a real molecular property?
profile_query  Zero-shot query of a profile-mode run: the compounds whose profiles sit nearest a molecule.
profiles       Evaluation of a profile-mode run (``image_source='profiles'``) on its held-out scaffolds.
query          Zero-shot queries against a trained run: a molecule finds wells, a well finds molecules.
run            Evaluate a training run on the test split: retrieval metrics, baselines, chance, probe, report.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['metrics', 'probing', 'profile_query', 'profiles', 'query', 'run'],
    submod_attrs={
        'metrics': ['per_query_metrics', 'bootstrap_ci', 'DIRECTIONS', 'ranks_fullpool', 'ranks_sampled', 'hit101', 'fullpool', 'chance', 'mean_chance', 'summarize_ranks', 'crop_level'],
        'probing': ['DATASETS', 'load_dataset', 'smiles_to_data', 'molecule_embeddings', 'scaffold_folds', 'probe_features', 'probe'],
        'profile_query': ['query_smiles_profiles'],
        'profiles': ['embed_profile_set', 'compound_mean_profiles', 'morgan_ridge_profiles', 'evaluate_profiles'],
        'query': ['well_table', 'well_embeddings', 'embed_wells', 'query_smiles', 'query_well'],
        'run': ['EVALUATE_STEPS', 'evaluate', 'TestEmbeddings', 'embed_test_set', 'compound_embeddings', 'retrieval_report', 'compound_profiles', 'morgan_ridge_embeddings', 'morgan_cca_embeddings', 'validate_metrics'],
    },
)
