"""cmcl_model: the molecule <-> cell-image contrastive model (MIGA method).

Subpackages
-----------
nn          Encoders (GIN, CNN, profile MLP), the cross-modal model, contrastive objectives.
data        Training pairs: (graph, crops) and (graph, well profiles); scaffold split.
train       Configuration, the training loop, checkpoints, torch.distributed, ablation.
evaluation  Retrieval metrics, baselines, embeddings, probe, activity, zero-shot queries.
reports     The evaluation report (report.html), the finetune document, their validator.
finetune    Transfer to labelled molecule sets (MoleculeNet, your CSV).
deploy      Exported encoders and molecule embeddings (``cmcl export``, ``cmcl embed``).

The map of every module: ``docs/layout.md``. Subpackages expose their public names lazily, so
importing ``cmcl_model`` does not import torch.
"""
