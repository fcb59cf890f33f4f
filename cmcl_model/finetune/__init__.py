"""Transfer: labelled molecule sets, fine-tuning the molecule encoder, the benchmark's records.

Modules
-------
baselines    Morgan-fingerprint models and linear probes on a fine-tuning split, tuned on validation.
featurizers  Molecular-graph featurizers for fine-tuning, and what each protocol uses.
labelled     Labelled molecule sets for downstream fine-tuning: loading, standardization and splits.
records      The transfer benchmark's accumulating results: ``docs/transfer.json`` and ``docs/transfer.md``.
resume       A fine-tuning run that survives being stopped: its state after each epoch, on disk.
pretrain     Structure-only self-supervised pre-training (attribute masking) and its molecules.
run          Downstream fine-tuning of the molecule encoder (MIGA / Hu et al. 2020 protocol).
scores       Masked losses, per-task ROC-AUC / RMSE, summaries over seeds.
tensors      Molecular graphs as concatenated tensors, batched by index.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['baselines', 'featurizers', 'labelled', 'pretrain', 'records', 'resume', 'run', 'scores', 'tensors'],
    submod_attrs={
        'featurizers': ['Featurizer', 'FEATURIZERS', 'PROTOCOL_MODEL', 'feature_dims', 'featurize'],
        'labelled': ['Kind', 'Protocol', 'PROTOCOLS', 'SplitMode', 'SPLIT_MODES', 'DatasetSpec', 'DATASETS', 'LabelledInputError', 'LabelledSet', 'read_labelled_csv', 'check_labelled_csv', 'load_shipped', 'prepare_labelled', 'scaffold_of', 'split_molecules', 'split_table'],
        'scores': ['is_better'],
        'records': ['HU2020_NO_PRETRAIN', 'RECORD_FIELDS', 'transfer_schema', 'empty_document', 'load_records', 'save_records', 'cell_key', 'add_record', 'finished_keys', 'leakage', 'render_markdown'],
        'run': ['FinetuneConfig', 'GraphTensors', 'PropertyModel', 'masked_bce', 'masked_mse', 'task_scores', 'finetune_once', 'score_val_test', 'check_encoder_features', 'predict', 'train_epoch', 'make_optimizer', 'EpochCallback', 'ProgressCallback', 'attribute_masking_pretrain', 'linear_probe', 'morgan_baseline', 'summarize', 'METHODS', 'run_methods', 'random_encoder', 'run_encoder', 'store_train_graphs', 'ssl_encoder'],
    },
)
