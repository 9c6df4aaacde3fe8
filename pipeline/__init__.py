"""cellstudy: how RNN, LSTM and GRU compare on sin -> cos once each is tuned fairly.

Core (imports neither MLflow nor Optuna): ``config``, ``data``, ``model``, ``train``,
``plots``, ``metrics``, ``evaluation``, ``inputs``, ``interrupts``, ``storage``, ``report``.

Edges: ``tracking`` and ``serving`` (the only modules that import MLflow), ``tuning`` (the only
one that imports Optuna), ``cli`` and ``__main__`` (the wiring).
"""

__version__ = "0.1.0"
