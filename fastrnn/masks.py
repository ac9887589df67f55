"""Keras-style mask helpers."""
import numpy as np


def mask_from_values(x, mask_value=0.0):
    """(B, T, F) -> (B, T) bool: a step is masked only when ALL its features equal mask_value
    (keras.layers.Masking semantics)."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"mask_from_values expects (batch, time, features), got shape {x.shape}")
    return np.any(x != mask_value, axis=-1)


def mask_from_ids(ids, padding_id=0):
    """(B, T) integer ids -> (B, T) bool, False where ids == padding_id
    (keras Embedding(mask_zero=True) semantics)."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"mask_from_ids expects (batch, time) ids, got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"mask_from_ids expects integer ids, got dtype {ids.dtype}")
    return ids != padding_id
