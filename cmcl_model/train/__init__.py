"""Training: configuration, the loop, checkpoints, resume, torch.distributed, objective ablations.

Modules
-------
ablation     Objective ablation from one call: GIC alone, + MGM, + GGIM, all three.
distributed  Data-parallel training on torch.distributed: process groups, gathered embeddings, global
loop         Training loop: configuration, run directories, checkpoints, resume.
worker       Entry point of one training process under torchrun (what ``cmcl train --nproc N`` starts).

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['ablation', 'distributed', 'loop', 'worker'],
    submod_attrs={
        'ablation': ['VARIANTS', 'variant_config', 'run_ablation', 'summarize'],
        'distributed': ['DistContext', 'init_from_env', 'gather_rows', 'all_reduce_sum', 'broadcast_object', 'any_rank', 'gather_counts', 'ShardedBatches', 'GlobalBatchNorm', 'convert_batchnorm', 'torchrun_command', 'launch'],
        'loop': ['TrainConfig', 'build_model', 'build_loss', 'amp_dtype', 'train', 'load_model', 'load_checkpoint', 'new_run_id', 'resolve_device'],
        'worker': ['PRESETS', 'resolve_config', 'main'],
    },
)
