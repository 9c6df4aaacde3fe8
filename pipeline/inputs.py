"""What a model's input must look like: float32 (batch, T, 1) sin values. Imports only NumPy, so
the CLI can refuse a bad ``evaluate --input`` file before importing MLflow or torch (seconds).

    >>> as_sequences([[0.0, 0.5]]).shape
    (1, 2, 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np


class InputError(ValueError):
    """The input cannot be read as (batch, T, 1) sin values."""


def as_sequences(x: Any) -> np.ndarray:
    """Reads ``x`` as a float32 (batch, T, 1) array, or says in one line why it cannot.

    A (batch, T) array or nested list is taken as one feature per step; float64 is narrowed.

    Raises:
        InputError: not numeric, or of another shape.
    """
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError("input must be numeric, shaped (batch, T, 1)") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] != 1 or arr.shape[1] < 1:
        raise InputError(f"input must be shaped (batch, T, 1) with T >= 1, got {arr.shape}")
    return arr
