"""What a :class:`~cmcl_model.train.config.TrainConfig` describes: the model, the device, the autocast dtype."""

from __future__ import annotations

import torch

from cmcl_model.nn.encoders import GINEncoder, ImageEncoder, ProfileEncoder
from cmcl_model.nn.model import CMCLModel
from cmcl_model.train.config import Device, Precision, TrainConfig
from cmcl_model.train.objectives import enabled_objectives

__all__ = ["build_model", "resolve_device", "amp_dtype"]


def build_model(config: TrainConfig) -> CMCLModel:
    """The model described by ``config`` (random init from the current torch RNG), with the heads
    of the objectives it enables (:func:`~cmcl_model.train.objectives.enabled_objectives`).

    Raises
    ------
    ValueError
        In profile mode without ``profile_features``.
    """
    gin = GINEncoder(
        config.gin_layers, config.gin_hidden, dropout=config.gin_dropout, jk=config.gin_jk, pooling=config.gin_pooling
    )
    if config.image_source == "profiles":
        if config.profile_features < 1:
            raise ValueError("profile mode needs TrainConfig.profile_features (set by `train` from the profiles)")
        cnn = ProfileEncoder(config.profile_features, config.mlp_widths, dropout=config.mlp_dropout)
    else:
        cnn = ImageEncoder(5, config.cnn_widths, blocks=config.cnn_blocks, stem_stride=config.cnn_stem_stride)
    heads = {o.name: o.head for o in enabled_objectives(config) if o.head is not None}
    return CMCLModel(gin, cnn, proj_dim=config.proj_dim, heads=heads)


def resolve_device(device: Device) -> torch.device:
    """``'auto'`` -> CUDA when available, else CPU.

    Raises
    ------
    ValueError
        If ``'cuda'`` is asked for and CUDA is not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but CUDA is not available")
    return torch.device(device)


def amp_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: float32 throughout).

    Raises
    ------
    ValueError
        For ``'fp16'`` off CUDA.
    """
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs CUDA (it needs a gradient scaler); on CPU use --set precision=bf16")
    return torch.bfloat16 if precision == "bf16" else torch.float16
