"""Reading a user's sin values (pipeline/inputs.py): unambiguous input converted, anything
else refused in one line, before MLflow or torch is imported."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.inputs import InputError, as_sequences


@pytest.mark.parametrize(("given", "shape"), [
    (np.zeros((2, 5, 1), dtype=np.float32), (2, 5, 1)),
    (np.zeros((3, 7)), (3, 7, 1)),                      # (batch, T): one feature per step
    ([[0.0, 0.3, 0.6], [0.1, 0.2, 0.3]], (2, 3, 1)),    # nested lists, as JSON gives them
])
def test_unambiguous_input_becomes_float32_batch_time_one(given, shape):
    x = as_sequences(given)
    assert x.shape == shape and x.dtype == np.float32


@pytest.mark.parametrize(("given", "fragment"), [
    ("sin", "input must be numeric"),
    ([[0.0, 1.0], [2.0]], "input must be numeric"),    # ragged
    (np.zeros(5), "got (5,)"),
    (np.zeros((2, 5, 3)), "got (2, 5, 3)"),
    (np.zeros((2, 0, 1)), "T >= 1"),
])
def test_anything_else_is_refused_in_one_line(given, fragment):
    with pytest.raises(InputError) as err:
        as_sequences(given)
    assert fragment in str(err.value) and "\n" not in str(err.value)
