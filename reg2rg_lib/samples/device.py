"""Batches onto a device, and a batch's case names for error messages (training and generation share both)."""

from __future__ import annotations

from typing import Any

import torch


def to_device(batch: Any, device: torch.device) -> Any:
    """`batch` with its tensors (also inside a dict, or a list or tuple of tensors) moved to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_names(batch: Any) -> str:
    """The case names of a collated batch, comma-separated, for an error message."""
    names = batch.get("names") if isinstance(batch, dict) else None
    return ", ".join(map(str, names)) if names else "<unnamed batch>"

