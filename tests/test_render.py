"""The report rendered (pipeline/render.py): tables with a row per cell and per baseline, a
column per searched path."""

from __future__ import annotations

from test_verdicts import FakeOutcome, _seed_runs

from pipeline.render import results_table, summary_table
from pipeline.verdicts import CellResult


def test_results_table_has_a_row_per_cell_and_per_baseline(tiny_cfg) -> None:
    cells = [CellResult("lstm", {"model.hidden_size": 9, "train.lr": 0.01}, 0.02,
                        _seed_runs(tiny_cfg, {t.name: 0.1 for t in tiny_cfg.data.tests}, 0.01))]
    table = results_table(tiny_cfg, cells, {"zero": {"test/mse": 0.5},
                                            "linear_rule": {"test/mse": 0.0}})
    rows = [r for r in table.splitlines() if r.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| lstm", "| baseline: zero",
                                                 "| baseline: linear rule"]
    assert " ± " in rows[0]
    assert table.startswith("| model | model.hidden_size | train.lr |")
    # The champions are stateless models: their table has no cliff column.
    assert "cliff" not in table.splitlines()[0]
    # Where the best validation came, against the budget: has the curve flattened?
    assert f"best step (of {tiny_cfg.train.steps})" in table.splitlines()[0]
    assert rows[0].split(" | ")[-3] == "30"  # the median of the seeds


def test_summary_table_names_the_searched_paths_and_the_registered_version(tiny_cfg) -> None:
    outcome = FakeOutcome("gru", {"model.hidden_size": 12, "train.lr": 0.004},
                          test_mse={"test/mse": 0.02}, model_version="3", champion_moved=True)
    table = summary_table([outcome], tiny_cfg)
    head, _, row = table.splitlines()
    assert head.startswith("| cell | best trial | model.hidden_size | train.lr | val MSE |")
    assert "| 12 | 0.004 |" in row and "sin2cos-gru v3](" in row and "@champion" in row


def test_a_champion_worse_than_zero_has_no_alias_in_the_summary(tiny_cfg) -> None:
    outcomes = [FakeOutcome("rnn", {"model.hidden_size": 8, "train.lr": 1e3}, val_mse=3e5,
                            model_version="1"),
                FakeOutcome("lstm", {"model.hidden_size": 8, "train.lr": 1e-2}, val_mse=0.01,
                            model_version="1", champion_moved=True)]
    table = summary_table(outcomes, tiny_cfg)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "v1" in rows["rnn"] and "(no alias: not below zero)" in rows["rnn"]
    assert "v1" in rows["lstm"] and "@champion" in rows["lstm"]
    assert "no alias" not in rows["lstm"]
