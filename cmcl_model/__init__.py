"""cmcl_model: the molecule <-> cell-image contrastive model (MIGA method).

Modules
-------
encoders   AtomEncoder, BondEncoder, GINEConv, GINEncoder, BasicBlock, ImageEncoder
losses     info_nce, margin_loss, GICLoss, mgm_loss, ggim_loss, hard_negatives
data       PairDataset (lazy zarr crops, DMSO normalisation), collate_pairs,
           UniqueCompoundBatchSampler, scaffold_split, load_or_create_split, graphs_from_arrow
model      CMCLModel, ProjectionHead
train      TrainConfig (.quick(), .demo()), train, load_model, load_checkpoint
metrics    hit101, fullpool, chance
evaluate   evaluate (reports/<run>/metrics.json + report.html)
synthetic  make_synthetic_store (tests, benchmarks), smiles_to_graph

Submodules are imported explicitly (``from cmcl_model.train.loop import train``) so that importing
the package does not import torch.
"""
