"""fastrnn: fast, faithful masked LSTM and GRU kernels for CPUs.

    >>> import numpy as np, fastrnn
    >>> lstm = fastrnn.LSTM(8, 16, seed=0)
    >>> out, (h, c) = lstm(np.ones((2, 5, 8)), lengths=[5, 3])
    >>> out.shape, h.shape
    ((2, 5, 16), (1, 2, 16))
"""
__version__ = "0.1.0"

try:  # the compiled extension, which every import below needs
    from . import _core
except ImportError as exc:  # say why, instead of Python's "partially initialized module"
    from ._missing_extension import explain
    raise explain(exc, __file__) from None

from ._config import (get_contention, get_num_threads, reset_contention, set_num_threads,
                      show_config)
from ._phase import get_learning_phase, learning_phase, set_learning_phase
from .layers import GRU, LSTM
from .masks import mask_from_ids, mask_from_values
from .io import (convert, from_keras, from_onnx, from_tf_checkpoint, from_torch, load, load_all,
                 load_weights, save)

__all__ = [
    "LSTM", "GRU", "mask_from_values", "mask_from_ids", "set_num_threads", "get_num_threads",
    "show_config", "set_learning_phase", "get_learning_phase", "learning_phase", "__version__",
    "from_torch", "from_keras", "from_onnx", "from_tf_checkpoint", "load", "load_all",
    "load_weights", "save", "convert", "get_contention", "reset_contention",
]
