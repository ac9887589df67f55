"""The training example learns: the adding problem with variable lengths, trained with fastrnn's
gradients and a numpy Adam, ends far below the trivial baseline (predict the mean, MSE 1/6)."""
import os
import sys

import numpy as np
import pytest

import fastrnn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import train_adding  # noqa: E402

BASELINE = 1 / 6


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_adding_problem_learns(cell):
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)  # tiny shapes: one thread is fastest and immune to a busy CI box
    try:
        losses = train_adding.train(cell, steps=400, hidden=32, seed=1)
    finally:
        fastrnn.set_num_threads(before)
    assert np.mean(losses[:20]) > 0.5 * BASELINE  # it starts near the baseline...
    assert np.mean(losses[-50:]) < 0.1 * BASELINE  # ...and ends an order of magnitude below
