"""Keras-style mask helpers: masks from padding values or padding token ids."""
import numpy as np


def mask_from_values(x, mask_value=0.0):
    """The mask `keras.layers.Masking(mask_value)` computes: a step is masked only when ALL
    its features equal `mask_value`.

    Args:
        x: array-like (batch, time, features).
        mask_value: the padding value (compared with `!=`; NaN never matches).

    Returns:
        bool array (batch, time), True = valid step; pass it as `layer(x, mask=...)`.

    Raises:
        ValueError: x is not 3-dimensional.

    Example:
        >>> x = np.array([[[1.0, 0.0], [0.0, 0.0]]])
        >>> fastrnn.mask_from_values(x)
        array([[ True, False]])
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"mask_from_values expects (batch, time, features), got shape {x.shape}")
    return np.any(x != mask_value, axis=-1)


def mask_from_ids(ids, padding_id=0):
    """The mask `keras.layers.Embedding(mask_zero=True)` computes from token ids: False where
    `ids == padding_id`.

    Args:
        ids: integer array-like (batch, time).
        padding_id: the id of the padding token.

    Returns:
        bool array (batch, time), True = valid step.

    Raises:
        ValueError: ids is not 2-dimensional. TypeError: ids are not integers.

    Example:
        >>> fastrnn.mask_from_ids(np.array([[5, 2, 0, 0]]))
        array([[ True,  True, False, False]])
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"mask_from_ids expects (batch, time) ids, got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"mask_from_ids expects integer ids, got dtype {ids.dtype}")
    return ids != padding_id
