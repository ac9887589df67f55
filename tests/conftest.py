import os
import sys

# Keras 3 must run on the torch backend here (no TensorFlow); set before anything imports keras.
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference.py

from fastrnn import _core  # noqa: E402

# Tolerances vs the float64 numpy reference. float32 kernels use rational sigmoid/tanh with
# <= 3.3e-7 max abs error per call (see src/fastrnn/activations.h) plus float32 rounding of
# the matmuls; errors stay ~1e-6 for the short sequences used here.
TOL = {np.dtype(np.float32): 5e-5, np.dtype(np.float64): 1e-12}


@pytest.fixture(params=_core.available_isas())
def isa(request):
    """Run a test under every kernel variant this CPU supports, restoring the default."""
    before = _core.get_isa()
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)
