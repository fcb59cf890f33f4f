"""Evaluation of a run: retrieval both ways with baselines, metrics, probes, zero-shot queries.

Modules
-------
activity       Phenotypic activity and MOA consistency of a store's compounds, for the evaluation report.
baselines      Baselines of the evaluation: what a run's retrieval is compared with, besides chance.
embeddings     Embeddings of a trained run: molecules, test compounds, wells and profiles in the shared space.
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
    submodules=['activity', 'baselines', 'embeddings', 'metrics', 'probing', 'profile_query', 'profiles', 'query', 'run'],
    submod_attrs={
        'activity': ['activity_comparison', 'consistency_summary'],
        'embeddings': ['TestEmbeddings', 'molecule_embeddings', 'embed_test_set', 'well_embeddings', 'embed_profile_set'],
        'metrics': ['DIRECTIONS', 'hit101', 'fullpool', 'chance', 'crop_level', 'retrieval_report', 'bootstrap_ci'],
        'probing': ['DATASETS', 'probe'],
        'profile_query': ['query_smiles_profiles'],
        'profiles': ['evaluate_profiles'],
        'query': ['query_smiles', 'query_well'],
        'run': ['EVALUATE_STEPS', 'evaluate'],
    },
)
