"""The job report rendered: its tables and the document as data (``document``), from the plain
results and verdicts of ``pipeline/verdicts.py``, written out twice from that one document: as
Markdown (``to_markdown``: report.md, the console, docs/results.md) and as one self-contained
HTML page (``to_html``: report.html, its figures embedded). Figures are ``pipeline/plots.py``'s.

Why both: MLflow 3.17's artifact viewer renders report.md but shows each of its images as the
Markdown text ``[alt](path)``, and cuts its wide tables; it shows an ``.html`` artifact as the page
itself, in a sandboxed frame, where images given as data URIs load.

    >>> print(summary_table(outcomes, cfg))                  # doctest: +SKIP
    >>> page = to_html(document(...), {COMPARISON_FIGURE: png})   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import ExperimentConfig
from pipeline.evaluation import zero_reference
from pipeline.metrics import summarize
from pipeline.verdicts import (
    BASELINE_LABELS,
    CellResult,
    TutorialResult,
    attr_values,
    differences,
    finite_spread,
    fmt,
    median_best_step,
    pm,
    seed_spread,
    tutorial_claims,
)

COMPARISON_FIGURE = "report/comparison.png"
"""The champions beside the baselines, on the job run."""
TUTORIAL_FIGURE = "report/tutorial.png"
"""The tutorial's red/blue figure, on the job run."""


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str
    """Inline Markdown: ``**bold**``, ``*italic*``, ```code```, ``[text](#/route)``."""


@dataclass(frozen=True)
class Items:
    """A bulleted list, each item inline Markdown."""

    items: list[str]


@dataclass(frozen=True)
class Figure:
    alt: str
    path: str
    """The PNG's artifact path on the job run, beside the report."""


@dataclass(frozen=True)
class Table:
    """A table as data, each cell inline Markdown: report.md and report.html show the same
    cells."""

    head: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.head) + " |", "|" + "---|" * len(self.head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


Block = Heading | Paragraph | Items | Figure | Table


def _space_cells(cfg: ExperimentConfig, params: dict[str, Any]) -> list[str]:
    """A table's cells for the searched values, one column per ``study.space`` path."""
    return [fmt(params[p]) if p in params else "-" for p in cfg.study.space]


def summary_table(outcomes: Sequence, cfg: ExperimentConfig) -> str:
    """A Markdown table of each study's best trial, its scores and its registry version."""
    return summary_rows(outcomes, cfg).markdown()


def summary_rows(outcomes: Sequence, cfg: ExperimentConfig) -> Table:
    """Each study's best trial, its scores and its registry version, linked."""
    tests = [t.name for t in cfg.data.tests]
    head = ["cell", "best trial", *cfg.study.space, "val MSE", "test MSE, this model",
            *(f"test {t}" for t in tests), "model version"]
    rows = []
    zero = zero_reference(cfg)
    for o in outcomes:
        name = cfg.tracking.registry_name(o.cell)
        # A link into the MLflow UI that shows the report (its routes live after the '#').
        version = "-" if o.model_version is None else (
            f"[{name} v{o.model_version}](#/models/{name}/versions/{o.model_version})"
            + (f" @{cfg.tracking.alias}" if o.champion_moved else "")
            + (" (no alias: not below zero)" if not o.val_mse < zero else ""))
        row = [o.cell, str(o.best_trial), *_space_cells(cfg, o.best_params), fmt(o.val_mse),
               fmt(o.test_mse.get("test/mse")),
               *(fmt(o.test_mse.get(f"test/{t}/mse")) for t in tests), version]
        rows.append(row)
    return Table(head, rows)


def results_table(cfg: ExperimentConfig, cells: Sequence[CellResult],
                  baselines: dict[str, dict[str, float]]) -> str:
    """One row per cell (champion configuration, seed retrains) and one per baseline."""
    return results_rows(cfg, cells, baselines).markdown()


def results_rows(cfg: ExperimentConfig, cells: Sequence[CellResult],
                 baselines: dict[str, dict[str, float]]) -> Table:
    """One row per cell (champion configuration, seed retrains) and one per baseline."""
    tests = [t.name for t in cfg.data.tests]
    # No cliff column: the champions are trained on independent windows from a fresh state,
    # so a jump at a window boundary of theirs measures that mismatch, not a cliff; the cliff
    # is the tutorial protocol's, in its own table.
    head = ["model", *cfg.study.space, "val MSE", *(f"test {t}" for t in tests), "test mean",
            f"best step (of {cfg.train.steps})", "train s", "device"]
    rows = []
    for c in cells:
        seconds = finite_spread([r.seconds for r in c.seeds])
        row = [c.cell, *_space_cells(cfg, c.params), fmt(c.val_mse),
               *(pm(seed_spread(c.seeds, f"test/{t}/mse")) for t in tests),
               pm(seed_spread(c.seeds, "test/mse")), str(median_best_step(c) or "-"),
               fmt(seconds.mean) if seconds else "-",
               ", ".join(sorted({r.device for r in c.seeds})) or "-"]
        rows.append(row)
    for name, scores in baselines.items():
        row = [BASELINE_LABELS[name], *("-" for _ in cfg.study.space), fmt(scores.get("val/mse")),
               *(fmt(scores.get(f"test/{t}/mse")) for t in tests), fmt(scores.get("test/mse")),
               "-", "-", "-"]
        rows.append(row)
    return Table(head, rows)


def tutorial_rows(tut: TutorialResult) -> Table:
    """The tutorial's protocol per cell: cliffs during and after training, MSE on every set."""
    tests = [t.name for t in tut.cfg.data.tests]
    after = tut.stateful_set
    head = ["model", "cliff in training", "step error in training",
            "cliff, first → last third", "MSE, first → last third",
            *([f"cliff after ({after})"] if after else []), *(f"test {t}" for t in tests),
            "train s"]
    rows = []
    for cell, runs in tut.runs.items():
        row = [cell, pm(summarize(attr_values(runs, "train_cliff"))),
               pm(summarize(attr_values(runs, "train_interior"))),
               f"{pm(summarize(attr_values(runs, 'early_cliff')))} → "
               f"{pm(summarize(attr_values(runs, 'late_cliff')))}",
               f"{pm(summarize(attr_values(runs, 'early_mse')))} → "
               f"{pm(summarize(attr_values(runs, 'late_mse')))}",
               *([pm(seed_spread(runs, f"test/{after}/cliff"))] if after else []),
               *(pm(seed_spread(runs, f"test/{t}/mse")) for t in tests),
               fmt(float(np.mean(attr_values(runs, "seconds"))))]
        rows.append(row)
    for name, scores in tut.baselines.items():
        row = [BASELINE_LABELS[name], fmt(tut.baseline_train_cliffs.get(name)), "-", "-", "-",
               *([fmt(scores.get(f"test/{after}/cliff"))] if after else []),
               *(fmt(scores.get(f"test/{t}/mse")) for t in tests), "-"]
        rows.append(row)
    return Table(head, rows)


def machine() -> str:
    """One line naming the machine, for results that will be compared later."""
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    gpu = (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
    return (f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} CPU cores"
            f"{gpu}; Python {platform.python_version()}, torch {torch.__version__}")


def scoring_note(cfg: ExperimentConfig) -> str:
    """The one scoring every table of the report uses, said once."""
    w = cfg.data.warmup
    if not w:
        return "Every MSE in this report scores every point of every window."
    return (f"Every MSE in this report, the tutorial protocol's runs included, is on this "
            f"job's own sets and leaves out the first {w} point{'s' if w > 1 else ''} of each "
            f"window (of the first window only where the state is carried across windows): "
            f"point {w} is the first one whose cos the sin values before it can fix.")


def document(cfg: ExperimentConfig, cells: Sequence[CellResult],
             baselines: dict[str, dict[str, float]], tut: TutorialResult | None,
             warnings: Sequence[str], studies: Table, refused: Sequence[str] = ()
             ) -> list[Block]:
    """The whole report as blocks, for ``to_markdown`` and ``to_html`` alike.

    Args:
        cfg: the job's config.
        cells: each cell's champion configuration and its seed retrains.
        baselines: each baseline's scores.
        tut: the tutorial protocol's runs, or None when the job skipped it.
        warnings: best trials on the edge of the search space.
        studies: each study's best trial (``summary_rows``).
        refused: studies whose best model got no alias (``refused_champions``).
    """
    n_seeds = cfg.report.seeds
    blocks: list[Block] = [
        Heading(f"Report: {cfg.study.name}", 1),
        Paragraph(f"Machine: {machine()}."),
        Paragraph(scoring_note(cfg)),
        Paragraph(f"Each cell's champion configuration (best {', '.join(cfg.study.space)}, "
                  f"chosen on validation only, {cfg.study.n_trials} trials per study) retrained "
                  f"with {n_seeds} weight seeds (train.seed + 1 ... + {n_seeds}), each tested "
                  "once. Test MSE: mean ± half-width of the 95% Student-t interval over those "
                  "seeds. val MSE: the best trial's. Baselines are deterministic."),
        *([Items([f"NO CHAMPION: {r}" for r in refused])] if refused else []),
        results_rows(cfg, cells, baselines),
        Figure("champions and baselines on the same held-out windows", COMPARISON_FIGURE),
        Heading("Differences between cells"),
        Paragraph("Called only when the 95% interval of the difference of means (Welch) "
                  "excludes 0."),
        Items([line.removeprefix("- ") for line in differences(cfg, cells, baselines)]),
        Heading("Search space"),
        Items([f"WARNING: {w}" for w in warnings]) if warnings else
        Paragraph(f"No best trial within {cfg.report.edge:.0%} of a search bound."),
    ]
    if tut is not None:
        blocks += [
            Heading("The tutorial's claims"),
            Paragraph(
                f"Protocol: `{cfg.report.tutorial_config}` (hidden {tut.cfg.model.hidden_size}, "
                f"lr {tut.cfg.train.lr:g}, {tut.cfg.train.steps} windows of "
                f"{tut.cfg.data.seq_len} points, batch 1, state carried), "
                f"{len(next(iter(tut.runs.values())))} seeds per cell. *In training*: the "
                "prediction the model made for each training window as it came, before the "
                "optimizer step on it (what the blog's red/blue figure shows). *After*: the "
                "final weights run over the continuation windows from a fresh state. The cliff "
                "is the mean absolute jump of the prediction between the last point of one "
                "window and the first of the next on consecutive windows (true jump 0). Step "
                "error: the same jump measure between neighbouring points inside windows, where "
                "a cliff is a boundary effect only if it is larger. Test MSE columns: the job's "
                "own test sets, scored as every table here."),
            tutorial_rows(tut),
            Figure("the tutorial's protocol: target and prediction during training",
                   TUTORIAL_FIGURE),
            Table(["claim", "verdict", "evidence"],
                  [[c.claim, f"**{c.verdict}**", c.evidence] for c in tutorial_claims(tut)]),
        ]
    blocks += [Heading("Studies"),
               Paragraph("Each study's best trial, tested once: its test MSE is that one "
                         "registered model's, not the seed mean above."),
               studies]
    return blocks


def to_markdown(blocks: Sequence[Block]) -> str:
    """The report as Markdown: report.md, the console, docs/results.md."""
    return "\n".join(_markdown(b) for b in blocks)


def _markdown(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}\n"
    if isinstance(block, Items):
        return "".join(f"- {item}\n" for item in block.items)
    if isinstance(block, Figure):
        return f"![{block.alt}]({block.path})\n"
    if isinstance(block, Table):
        return block.markdown()
    return f"{block.text}\n"


def to_html(blocks: Sequence[Block], figures: dict[str, bytes]) -> str:
    """The report as one self-contained HTML page: report.html, which MLflow's UI shows as a
    page (figures, tables, links) where it shows report.md's images as text.

    Args:
        blocks: ``document``'s.
        figures: each figure's PNG bytes by artifact path, embedded as data URIs (the UI shows
            the page from a blob: URL, where no relative path resolves); a figure missing here
            is referred to by its path, which resolves where the page lies beside its folder.
    """
    title = next((b.text for b in blocks if isinstance(b, Heading)), "Report")
    body = "\n".join(_html(b, figures) for b in blocks)
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title, quote=False)}</title>\n<style>{_STYLE}</style>\n</head>\n"
            f"<body>\n{body}\n{_ROUTES}\n</body>\n</html>\n")


def _html(block: Block, figures: dict[str, bytes]) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_inline(block.text)}</h{block.level}>"
    if isinstance(block, Items):
        return "<ul>\n" + "".join(f"<li>{_inline(i)}</li>\n" for i in block.items) + "</ul>"
    if isinstance(block, Figure):
        png = figures.get(block.path)
        src = (f"data:image/png;base64,{base64.b64encode(png).decode()}" if png is not None
               else html.escape(block.path))
        alt = html.escape(block.alt)
        return (f'<figure><img src="{src}" alt="{alt}"><figcaption>{alt}</figcaption>'
                "</figure>")
    if isinstance(block, Table):
        head = "".join(f"<th>{_inline(h)}</th>" for h in block.head)
        rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>\n"
                       for row in block.rows)
        # Tables of numbers keep each cell on one line (and scroll); tables of sentences wrap.
        prose = ' class="prose"' if any(len(c) > 60 for row in block.rows for c in row) else ""
        table = (f'<div class="table"><table{prose}>\n<thead><tr>{head}</tr></thead>\n'
                 f"<tbody>\n{rows}</tbody>\n</table></div>")
        linked = any(_ROUTE_LINK.search(c) for row in block.rows for c in row)
        return table + ("\n" + _ROUTES_NOTE if linked else "")
    return f"<p>{_inline(block.text)}</p>"


_ROUTE_LINK = re.compile(r"\[([^\]]+)\]\((#/[^)\s\"']+)\)")
"""A link to a route of MLflow's UI (``#/models/<name>/versions/<v>``): the only links the
report makes, so the only ones turned into anchors."""
_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*\s][^*]*?)\*(?![*\w])"), r"<em>\1</em>"),
    (_ROUTE_LINK, r'<a href="\2">\1</a>'),
]


def _inline(text: str) -> str:
    """The report's inline Markdown as HTML, the text escaped first (a study name or a
    warning may hold ``<`` or ``&``; a link's route holds no quote)."""
    out = html.escape(text, quote=False)
    for pattern, replacement in _INLINE:
        out = pattern.sub(replacement, out)
    return out


_ROUTES_NOTE = ('<p class="note">MLflow 3.17 shows this page in a sandboxed frame that a click '
                "cannot leave: open a version from report.md beside it, or copy its link "
                "(right-click).</p>")
_ROUTES = """<script>
// The UI shows this page from a blob: URL, where a route (#/models/...) points into the page
// itself: made absolute on the UI page that shows it (the referrer), a link can be copied.
const ui = document.referrer.split("#")[0];
if (ui) document.querySelectorAll('a[href^="#/"]').forEach(a => {
  a.href = ui + a.getAttribute("href"); a.target = "_blank"; a.rel = "noopener";
});
</script>"""
_STYLE = """
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 24px auto; padding: 0 24px; max-width: 1280px; }
h1 { font-size: 24px; margin: 0 0 12px; }
h2 { font-size: 19px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d1d9e0; }
.table { overflow-x: auto; margin: 12px 0; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d1d9e0; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
table:not(.prose) td { white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
figure { margin: 16px 0; }
img { max-width: 100%; height: auto; border: 1px solid #e8ebef; }
figcaption, .note { color: #59636e; font-size: 12px; }
code { font-size: 12px; background: #eff1f3; padding: 1px 4px; border-radius: 4px; }
a { color: #0969da; }
"""
