"""cellstudy: how RNN, LSTM and GRU compare on sin -> cos once each is tuned fairly.

Core (no tracking, no tuning): ``config``, ``data``, ``model``, ``train``, ``plots``.
``records``: what runs and models say (params, config, descriptions), as plain data.
Edges: ``tracking`` and ``serving`` (MLflow), ``tuning`` (Optuna), ``cli`` (wiring).
"""

__version__ = "0.1.0"
