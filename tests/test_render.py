"""The report rendered (pipeline/render.py): tables with a row per cell and per baseline, a
column per searched path; the same document as Markdown and as one self-contained HTML page."""

from __future__ import annotations

import base64

from test_verdicts import FakeOutcome, _seed_runs

from pipeline.render import (
    COMPARISON_FIGURE,
    document,
    results_table,
    summary_rows,
    summary_table,
    to_html,
    to_markdown,
)
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


PNG = b"\x89PNG\r\n\x1a\n not a real picture"


def _page(tiny_cfg, warnings=(), figures=None) -> str:
    cells = [CellResult("lstm", {"model.hidden_size": 9, "train.lr": 0.01}, 0.02,
                        _seed_runs(tiny_cfg, {t.name: 0.1 for t in tiny_cfg.data.tests}, 0.01))]
    studies = summary_rows([FakeOutcome("lstm", {"model.hidden_size": 9, "train.lr": 0.01},
                                        model_version="4", champion_moved=True)], tiny_cfg)
    doc = document(tiny_cfg, cells, {"zero": {"test/mse": 0.5}}, None, list(warnings), studies)
    return to_html(doc, {COMPARISON_FIGURE: PNG} if figures is None else figures)


def test_the_html_report_embeds_its_figures_as_data_uris(tiny_cfg) -> None:
    """MLflow's UI shows report.html from a blob: URL, where only an embedded image loads."""
    page = _page(tiny_cfg)
    assert f'<img src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in page
    assert f'src="{COMPARISON_FIGURE}"' not in page
    # Without the bytes the figure is still referred to, by its path beside the page.
    assert f'<img src="{COMPARISON_FIGURE}"' in _page(tiny_cfg, figures={})


def test_the_html_report_links_each_version_to_its_registry_page(tiny_cfg) -> None:
    page = _page(tiny_cfg)
    assert '<a href="#/models/sin2cos-lstm/versions/4">sin2cos-lstm v4</a> @champion' in page
    assert "document.referrer" in page  # made absolute on the UI page that shows it


def test_the_html_report_has_the_markdown_reports_tables_and_sections(tiny_cfg) -> None:
    cells = [CellResult("gru", {"model.hidden_size": 9, "train.lr": 0.01}, 0.02,
                        _seed_runs(tiny_cfg, {t.name: 0.1 for t in tiny_cfg.data.tests}, 0.01))]
    doc = document(tiny_cfg, cells, {"zero": {"test/mse": 0.5}}, None, [],
                   summary_rows([], tiny_cfg))
    markdown, page = to_markdown(doc), to_html(doc, {})
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    headings = [line.lstrip("# ") for line in markdown.splitlines() if line.startswith("#")]
    assert headings == ["Report: sin2cos-smoke", "Differences between cells", "Search space",
                        "Studies"]
    for h in headings[1:]:
        assert f"<h2>{h}</h2>" in page
    assert page.count("<table") == markdown.count("\n|---") == 2
    assert "<td>gru</td>" in page and "<strong>in_dist</strong>" in page  # bold as in the .md


def test_the_html_report_escapes_its_text(tiny_cfg) -> None:
    page = _page(tiny_cfg, warnings=['<script>alert("x")</script> & [a](javascript:b)'])
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(\"x\")&lt;/script&gt; &amp; [a](javascript:b)" in page
    assert 'href="javascript' not in page  # only the UI's own routes become links
