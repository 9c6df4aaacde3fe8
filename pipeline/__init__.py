"""cellstudy: how RNN, LSTM and GRU compare on sin -> cos once each is tuned fairly.

Core (imports neither MLflow nor Optuna): ``config``, ``data``, ``model``, ``train``,
``plots``, ``metrics``, ``evaluation``, ``inputs``, ``interrupts``, ``storage``,
``secrets`` (masking), ``records`` (what runs say, as plain data), ``verdicts`` (the
report's numbers and verdicts) and ``render`` (its Markdown and HTML).

Edges: ``tracking`` and ``serving`` (the only modules that import MLflow), ``runs`` (the one
tracked training run), ``report`` (the job's report: trains and logs through ``runs``),
``tuning`` (the only one that imports Optuna), ``workers`` (``tune --workers N``: the worker
processes and the progress bar), ``preflight`` (every input checked before anything is
written), ``cli`` and ``__main__`` (the wiring).
"""

__version__ = "0.1.0"
