"""The MLflow UI as a user sees it: the smoke job's store served by a real ``mlflow server`` and
opened in headless Chromium (Debian's package, driven by playwright).

What it checks is what a user relies on: the experiment opens on training runs, the studies are
listed with their trials nested under them, a trial shows its metrics and its prediction PNG,
its metrics tab opens on curves, the registered model shows the champion alias, the job run
carries report.md (its version links lead to the registry) and report.html (its figures drawn).

Found in MLflow 3.17.2: the sidebar's GenAI / Model training switch (kept in the browser,
GenAI by default, or ``?workflowType=machine_learning`` in the URL) decides what an experiment
opens on; the experiment's ``mlflow.experimentKind`` tag is not read while that switch exists.
A run's metrics tab draws a metric whose last step is 0 (logged once) as a one-bar chart
labelled to 2 decimals ("0.00" for 0.000274), any other as a line; its sections (the key up
to the last '/') come in alphabetical order. The Markdown viewer renders report.md (tables,
links) but writes its images as text; an .html artifact is shown in a frame sandboxed to
scripts only, from a blob: URL. The SPA renders late, so every step waits for an element,
never for a fixed time.

    CELLSTUDY_UI_SHOTS=docs pytest tests/test_ui.py                 # also keep the screenshots
    CELLSTUDY_UI_STORE=/tmp/job pytest tests/test_ui.py             # a store a job already filled
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, skip_unless_installed, subprocess_env

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000
"""Per element: the first page load compiles a large bundle on a busy 2-core machine."""
RUN_NAME_CELL = "[role=gridcell][col-id='attributes.`Run Name`']"
HTML_FRAME = "iframe.mlflow-html-iframe"
"""The frame the artifact viewer shows an .html artifact in."""


@dataclass
class Store:
    """A filled tracking store and the ids a user would click through."""

    root: Path
    experiment_id: str
    job: object
    studies: list
    trial: object
    trials: list
    untested: object
    """A finished trial that is not its study's best (no test scores), where there is one."""
    registered: str
    alias: str


def _run_smoke_job(root: Path) -> None:
    """The smoke job into a throw-away store: ./mlruns lands under ``root``."""
    cmd = [sys.executable, "-m", "pipeline", "-q", "tune",
           "--config", str(ROOT / "experiments" / "smoke.yaml"),
           "--storage", f"sqlite:///{root / 'optuna.db'}"]
    done = subprocess.run(cmd, cwd=root, env=subprocess_env(root), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _load_store(root: Path) -> Store:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sin2cos")
    runs = client.search_runs([exp.experiment_id], max_results=1000)

    def level(name: str) -> list:
        return [r for r in runs if r.data.tags.get("cellstudy.level") == name]

    job, studies = level("job")[0], level("study")
    first = min(studies, key=lambda r: r.info.run_name)
    trials = [r for r in level("trial")
              if r.data.tags.get("mlflow.parentRunId") == first.info.run_id
              and r.info.status == "FINISHED"]
    trial = min(trials, key=lambda r: int(r.data.tags["optuna.trial_number"]))
    model = client.search_registered_models()[0]
    alias = next(iter(model.aliases))
    # Finished trials of every study, up to four: what a user selects to compare side by side.
    finished = [r for r in level("trial") if r.info.status == "FINISHED"]
    untested = next((r for r in finished if "test/mse" not in r.data.metrics), finished[0])
    return Store(root, exp.experiment_id, job, studies, trial, finished[:4], untested,
                 model.name, alias)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    given = os.environ.get("CELLSTUDY_UI_STORE")
    if given:
        return _load_store(Path(given))
    root = tmp_path_factory.mktemp("ui-store")
    _run_smoke_job(root)
    return _load_store(root)


@pytest.fixture(scope="module")
def server(store: Store, tmp_path_factory) -> Iterator[str]:
    from servers import mlflow_server

    with mlflow_server(f"sqlite:///{store.root / 'mlflow.db'}",
                       tmp_path_factory.mktemp("ui-server")) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[object]:
    skip_unless_installed(None if CHROMIUM.exists() else
                          f"{CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS, headless=True, viewport={"width": 1400, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, tmp_path) -> Iterator[object]:
    page = browser.new_page()
    # MLflow's GenAI overview opens a one-time "Detect Issues in Your Traces" tip a moment
    # after it loads; its mask took a click meant for the page in one fresh-clone CI run. A
    # user dismisses it: Playwright does the same whenever it appears in an action's way.
    page.add_locator_handler(page.get_by_role("button", name="Got it", exact=True),
                             lambda tip: tip.click())
    try:
        yield page
    finally:
        page.screenshot(path=str(tmp_path / "last.png"))  # left for a failing test's post-mortem
        page.close()


def _shot(page, name: str, tmp_path: Path) -> None:
    """Saves a screenshot; also into $CELLSTUDY_UI_SHOTS when set (docs/ for the README)."""
    path = tmp_path / name
    page.screenshot(path=str(path))
    target = os.environ.get("CELLSTUDY_UI_SHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)


def _close_assistant(page) -> None:
    """The assistant side panel takes a third of the screen; a user closes it once."""
    close = page.locator("button[aria-label='Close']")
    if close.count():
        close.first.click()


def _expand(page, run_name: str) -> None:
    cell = page.locator(RUN_NAME_CELL, has_text=run_name).first
    cell.locator("button[data-component-id*='runnamecellrenderer']").click()


SWITCH_TRIES = 3
SWITCH_WAIT_MS = 15_000


def _switch_to_model_training(page) -> None:
    """Flips the sidebar switch to Model training, as a user does: clicks it and looks.

    The GenAI overview's one-time tip can open its mask between Playwright's hit check and the
    click itself; the click then lands on the mask and the switch stays on GenAI (one
    fresh-clone CI run: the handler dismissed the tip, the page stayed on the overview for
    60 s). A user whose click was eaten clicks again, so up to SWITCH_TRIES clicks, each
    followed by a wait for the runs view in the URL."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    switch = page.get_by_text("Model training", exact=True).first
    for _ in range(SWITCH_TRIES):
        switch.click()
        try:
            page.wait_for_function("() => location.hash.includes('/runs')",
                                   timeout=SWITCH_WAIT_MS)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"still on {page.url} after {SWITCH_TRIES} clicks on Model training")


def test_experiment_opens_on_training_runs(page, server: str, store: Store, tmp_path) -> None:
    """Under Model training (the switch a user flips once, or the link the README gives) the
    experiment opens on its runs, not on the GenAI overview."""
    from mlflow import MlflowClient

    exp = MlflowClient(f"sqlite:///{store.root / 'mlflow.db'}").get_experiment(
        store.experiment_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"

    page.goto(f"{server}/#/experiments/{store.experiment_id}")
    _switch_to_model_training(page)
    page.get_by_text(store.job.info.run_name, exact=True).first.wait_for()
    assert "/runs" in page.url

    page.goto(f"{server}/#/experiments/{store.experiment_id}?workflowType=machine_learning")
    page.get_by_text(store.job.info.run_name, exact=True).first.wait_for()
    assert "/runs" in page.url
    assert not page.get_by_text("Detect Issues").count()  # the GenAI overview's button


def test_runs_page_nests_trials_under_studies(page, server: str, store: Store,
                                              tmp_path) -> None:
    page.goto(f"{server}/#/experiments/{store.experiment_id}/runs"
              "?workflowType=machine_learning")
    job = store.job.info.run_name
    page.get_by_text(job, exact=True).first.wait_for()
    _close_assistant(page)
    study = min(s.info.run_name for s in store.studies)
    trial = store.trial.info.run_name
    assert not page.get_by_text(study, exact=True).count()  # nested: hidden until expanded

    _expand(page, job)
    for s in store.studies:
        page.get_by_text(s.info.run_name, exact=True).first.wait_for()
    page.get_by_text("baseline-zero", exact=True).first.wait_for()
    assert not page.get_by_text(trial, exact=True).count()

    _expand(page, study)
    page.get_by_text(trial, exact=True).first.wait_for()
    _shot(page, "ui-runs.png", tmp_path)


def _written_forms(value: float) -> list[str]:
    """Prefixes a page may write ``value`` with: scientific (``3.358``) or positional, cut
    three digits after its first significant one (``0.0000335``)."""
    fixed = f"{value:.15f}"
    first = next(i for i, ch in enumerate(fixed) if ch not in "0.")
    return [f"{value:.4g}"[:5], fixed[: first + 3]]


def test_trial_page_shows_metrics_and_prediction_png(page, server: str, store: Store,
                                                     tmp_path) -> None:
    run = store.trial.info
    page.goto(f"{server}/#/experiments/{store.experiment_id}/runs/{run.run_id}"
              "?workflowType=machine_learning")
    page.get_by_text(run.run_name).first.wait_for()
    _close_assistant(page)
    for key in ("val/mse_best", "val/mse", "train/loss"):
        page.get_by_text(key, exact=True).first.wait_for()
    best = store.trial.data.metrics["val/mse_best"]
    # The value, however the UI writes it: "0.0245..." for a smoke trial, "0.0000335..." for
    # the main job's (where the old check, "3.358", found nothing).
    forms = _written_forms(best)
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not any(page.get_by_text(form).count() for form in forms):
        assert time.monotonic() < deadline, f"none of {forms} shown for val/mse_best {best}"
        time.sleep(0.2)
    _shot(page, "ui-trial.png", tmp_path)

    page.goto(f"{server}/#/experiments/{store.experiment_id}/runs/{run.run_id}/artifacts"
              "?workflowType=machine_learning")
    page.get_by_text("val_predictions.png", exact=True).first.click()
    # The preview is an <img> that has loaded real pixels from the artifact store.
    page.wait_for_function("""() => [...document.images].some(
        im => im.complete && im.naturalWidth > 300)""", timeout=TIMEOUT_MS)
    _shot(page, "ui-trial-artifact.png", tmp_path)


CHART_CARDS = """() => [...document.querySelectorAll(
    '[data-testid=experiment-view-compare-runs-card]')]
    .map(card => ({title: (card.innerText || '').trim().split('\\n')[0],
                   kind: card.querySelector('g.trace.bars') ? 'bar'
                       : card.querySelector('g.trace.scatter') ? 'line' : null,
                   labels: [...card.querySelectorAll('.bartext')].map(t => t.textContent)}))"""
"""Each chart card of a metrics tab, in page order: its title (the key's last part), whether
plotly drew it as bars or a line (null until drawn), and the bars' labels."""


def test_trial_metrics_tab_opens_on_curves(page, server: str, store: Store, tmp_path) -> None:
    """A finished trial's metrics tab: the values a researcher reads (validation, best so far,
    the step it came at) are lines, none a one-bar chart labelled "0.00"."""
    run = store.untested
    page.set_viewport_size({"width": 1400, "height": 1800})  # charts are drawn when in view
    page.goto(f"{server}/#/experiments/{store.experiment_id}/runs/{run.info.run_id}"
              "/model-metrics?workflowType=machine_learning")
    page.wait_for_function(f"""() => {{
        const drawn = ({CHART_CARDS})().filter(c => c.kind).map(c => c.title);
        return ['loss', 'mse', 'mse_best', 'best_step'].every(t => drawn.includes(t)); }}""",
                           timeout=TIMEOUT_MS)
    _close_assistant(page)
    cards = page.evaluate(CHART_CARDS)
    kinds = {c["title"]: c["kind"] for c in cards}
    assert kinds["mse_best"] == kinds["best_step"] == kinds["mse"] == kinds["loss"] == "line"
    assert "0.00" not in [label for c in cards for label in c["labels"]]
    if "test/mse" not in run.data.metrics:  # a tested trial opens on its test scores' bars
        assert (cards[0]["title"], cards[0]["kind"]) == ("loss", "line")
    page.screenshot(path=str(tmp_path / "ui-trial-metrics.png"))


def test_trial_comparison_shows_searched_params_and_prediction_plots(
        page, server: str, store: Store, tmp_path) -> None:
    """Selecting a study's finished trials and comparing them: the searched params are columns
    of numbers, and the prediction plot is an artifact they share (3.17's compare view only
    compares top-level artifacts)."""
    import json

    assert len(store.trials) >= 2
    ids = json.dumps([t.info.run_id for t in store.trials])
    page.goto(f"{server}/#/compare-runs?runs={ids}&experiments=[\"{store.experiment_id}\"]"
              "&workflowType=machine_learning")
    page.get_by_text("model.hidden_size", exact=True).first.wait_for()
    _close_assistant(page)
    for trial in store.trials:
        for key in ("model.hidden_size", "train.lr"):
            value = trial.data.params[key]
            float(value)  # a number, not a range written as text
            page.get_by_text(value[:6]).first.wait_for()
    page.get_by_text("val_predictions.png").first.wait_for()
    assert not page.get_by_text("No common artifacts to display").count()
    _shot(page, "ui-compare.png", tmp_path)


def test_registered_model_shows_champion_alias(page, server: str, store: Store,
                                               tmp_path) -> None:
    page.goto(f"{server}/#/models/{store.registered}?workflowType=machine_learning")
    page.get_by_text(store.registered).first.wait_for()
    page.get_by_text(store.alias).first.wait_for()
    page.get_by_text("pyfunc contract.").first.wait_for()  # the description, rendered
    _close_assistant(page)
    _shot(page, "ui-model.png", tmp_path)


def _artifacts(page, server: str, store: Store, name: str) -> None:
    """Opens the job run's artifact ``name``."""
    page.goto(f"{server}/#/experiments/{store.experiment_id}/runs/{store.job.info.run_id}"
              "/artifacts?workflowType=machine_learning")
    page.get_by_text(name, exact=True).first.click()


def test_job_run_shows_report(page, server: str, store: Store, tmp_path) -> None:
    """report.md is rendered, and its version links lead to the registry's version page."""
    _artifacts(page, server, store, "report.md")
    page.get_by_text("Differences between cells").first.wait_for()
    page.get_by_text("The tutorial's claims").first.wait_for()
    _close_assistant(page)
    link = page.locator("a[href^='#/models/']").first
    route = link.get_attribute("href")
    link.click()
    page.get_by_text(f"Version {route.rsplit('/', 1)[1]}").first.wait_for()
    assert page.url.endswith(route)


def test_job_run_shows_report_html_with_its_figures(page, server: str, store: Store,
                                                    tmp_path) -> None:
    """report.html, in the viewer's frame: its figures drawn (data URIs; report.md's images
    are text there) and its versions linked to the registry page of the UI that shows it."""
    _artifacts(page, server, store, "report.html")
    page.frame_locator(HTML_FRAME).get_by_text("Differences between cells").first.wait_for()
    _close_assistant(page)
    frame = next(f for f in page.frames if f.url.startswith("blob:"))
    figures = frame.locator("figure img").count()
    assert figures == 2  # the comparison and the tutorial's red/blue figure
    frame.wait_for_function("""n => [...document.querySelectorAll('figure img')].filter(
        im => im.complete && im.naturalWidth > 300).length === n""", arg=figures,
                            timeout=TIMEOUT_MS)
    links = frame.locator("a[href*='#/models/']")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert hrefs and all(h.startswith(f"{server}/#/models/sin2cos-") for h in hrefs), hrefs
    _shot(page, "ui-report.png", tmp_path)
    page.goto(hrefs[0])  # where the link leads (a click cannot leave the sandboxed frame)
    page.get_by_text(f"Version {hrefs[0].rsplit('/', 1)[1]}").first.wait_for()
