"""Training: configuration, objectives, the loop, run directories, checkpoints, torch.distributed, ablations.

Modules
-------
config        Training configuration: TrainConfig, its presets and its choice lists (torch-free).
objectives    Training objectives as a list: GIC plus registered auxiliary objectives (MGM, GGIM).
build         What a TrainConfig describes: the model, the device, the autocast dtype.
loaders       The data of a training run: the split's datasets, the global batch sampler, the loaders.
loop          The training loop: one optimizer step, one epoch, validation, and ``train``.
layout        Where a training run's files live (torch-free): config.json, metrics.jsonl, checkpoints.
rundir        A run's directory: its id, config.json, metrics.jsonl, and the start / resume checks.
checkpoints   Checkpoints of a training run: what they hold, writing and reading them.
distributed   Data-parallel training on torch.distributed: process groups, gathered embeddings, global
              batch norm, and the launcher behind ``cmcl train --nproc N``.
worker        Entry point of one training process under torchrun (what ``cmcl train --nproc N`` starts).
ablation      Objective ablation from one call: GIC alone, GIC + each registered objective, all of them.

Names listed in ``__all__`` are imported lazily: importing the package imports nothing heavy.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=['ablation', 'build', 'checkpoints', 'config', 'distributed', 'layout', 'loaders', 'loop', 'objectives',
                'rundir', 'worker'],
    submod_attrs={
        'ablation': ['ablation_variants', 'variant_config', 'run_ablation', 'summarize'],
        'build': ['build_model', 'resolve_device', 'amp_dtype'],
        'checkpoints': ['load_checkpoint', 'load_model'],
        'config': ['TrainConfig', 'PRESETS', 'resolve_config'],
        'distributed': ['DistContext', 'launch'],
        'layout': ['checkpoint_path', 'metrics_path'],
        'loop': ['train'],
        'objectives': ['Objective', 'ObjectiveInputs', 'OBJECTIVES', 'register', 'unregister', 'build_loss',
                       'compute_losses'],
        'rundir': ['new_run_id', 'read_metrics'],
    },
)
