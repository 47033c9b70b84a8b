"""The atlas's pages in headless Chromium (the system browser, driven by Playwright): from
file:// and through `atlas serve`. Any console error, page error or dialog fails a test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from atlas_helpers import (
    HOSTILE_EXPLANATION,
    IMG_TOKEN,
    NEGATIVE_TEXT,
    SCRIPT_TOKEN,
    SINGLE_PASS_TEXT,
    SOURCES,
    WORDS_BASELINE,
    as_old_schema,
    make_run,
    single_pass_row,
    with_negative_side,
)

from neuronscope.atlas import build_atlas
from neuronscope.atlas.serve import start
from neuronscope.cli import main
from neuronscope.report import half_width, judged
from neuronscope.results import write_result
from neuronscope.store import Store

CHROMIUM = os.environ.get("NEURONSCOPE_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("atlas-browser") / "run"
    make_run(Store.open(str(path)))
    build_atlas(str(path))
    return path


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make install` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Watched:
    """A page whose console errors, page errors and dialogs are collected; ``allow`` lists
    fragments of console errors a test expects."""

    def __init__(self, page, shots: Path):
        self.page, self.shots, self.problems, self.allow = page, shots, [], []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog):
        self.problems.append(f"dialog ({dialog.type}): {dialog.message}")
        dialog.dismiss()

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(a in p for a in self.allow)]


@pytest.fixture
def watched(browser, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(WAIT_MS)
    w = Watched(page, tmp_path)
    yield w
    page.close()
    assert not w.unexpected(), w.unexpected()


def url(atlas: Path, hash_: str = "") -> str:
    return (atlas / "index.html").as_uri() + hash_


def count(page) -> str:
    return page.inner_text("#count")


def cells(page, neuron_id: str) -> list[str]:
    """The texts of a neuron's row in the index table."""
    return page.eval_on_selector(f"#neurons tr[data-id={neuron_id}]", "r => [...r.cells].map(c => c.textContent)")


# The planted run's intervals (atlas_helpers): the neuron's, its words baseline's and the control's.
SCORE, WORDS, CONTROL = (0.9, [0.85, 0.95]), (0.64, [0.55, 0.72]), (0.45, [0.38, 0.52])
NEGATIVE_CONTROL_TEXT = "0.410 [0.38, 0.52]"  # the negative side's control score (atlas_helpers)


def test_index_lists_neurons_and_filters(run, watched):
    page = watched.page
    page.goto(url(run / "atlas"))
    page.wait_for_selector("#neurons tbody tr")
    ids = page.eval_on_selector_all("#neurons tbody tr", "rows => rows.map(r => r.dataset.id)")
    assert ids == ["L3_N0", "L3_N1", "L3_N2", "L3_N3", "L5_N7"] and count(page) == "5 of 5 neurons"
    # NeuronScope, single pass, words, control: each score ± half its interval, as the terminal's table
    assert cells(page, "L3_N0")[3:7] == [
        half_width(*SCORE),
        half_width(0.8, [0.7, 0.88]),
        half_width(*WORDS),
        half_width(*CONTROL),
    ]
    assert cells(page, "L3_N0")[3] == "0.90±.05" and cells(page, "L3_N3")[3:7] == ["–"] * 4
    watched.shot("index")
    page.select_option("#f-layer", "5")
    assert count(page) == "1 of 5 neurons"
    page.select_option("#f-layer", "")
    page.select_option("#f-explained", "no")
    assert count(page) == "2 of 5 neurons"
    page.select_option("#f-explained", "")
    page.select_option("#f-modes", "2")
    assert count(page) == "1 of 5 neurons"
    page.select_option("#f-modes", "")
    page.fill("#f-min", "0.85")
    assert count(page) == "3 of 5 neurons"  # unexplained and failed neurons have no score
    page.fill("#f-min", "")
    page.fill("#f-search", "calendar")  # from a file: substring search over explanations and top tokens
    page.wait_for_function("document.getElementById('count').textContent === '1 of 5 neurons'")
    assert page.inner_text("#search-mode") == "text search"
    page.fill("#f-search", "yellow")
    page.wait_for_function("document.querySelector('#neurons tbody tr').dataset.id === 'L3_N1'")
    watched.shot("index-search")
    page.click("#neurons tbody tr >> nth=0")
    page.wait_for_selector("#title")
    assert page.inner_text("#title") == "Layer 3 · Neuron 1" and page.evaluate("location.hash") == "#/L3/N1"


def shading(page) -> list[tuple[float, float, str]]:
    """(activation, alpha, rgb) of every shaded token on the page."""
    return [
        tuple(x)
        for x in page.eval_on_selector_all(
            ".tok",
            """spans => spans.map(s => {
        const m = getComputedStyle(s).backgroundColor.match(/rgba?\\(([^)]*)\\)/)[1].split(',').map(Number);
        return [Number(s.dataset.act), m.length === 4 ? m[3] : 1, m.slice(0, 3).join(',')];
    })""",
        )
    ]


def test_neuron_page(run, watched):
    page = watched.page
    page.goto(url(run / "atlas", "#/L3/N1"))  # a deep link, fresh
    page.wait_for_selector(".mode")
    watched.shot("neuron-L3-N1")
    modes = page.eval_on_selector_all(
        ".mode",
        "ms => ms.map(m => [m.dataset.mode, m.querySelector('.explanation').textContent, m.querySelector('.scores').textContent, m.querySelectorAll('.exemplar').length])",
    )
    assert [(m[0], m[1], m[3]) for m in modes] == [
        ("0", "animals such as dogs, horses and cats", 6),
        ("1", "colour words like red and green", 4),
    ]
    assert all(" vs " in m[2] for m in modes), "every score beside its control"
    # each with its interval, beside the mode's words baseline and the control, as `show` writes them
    mode_words = (0.7, [0.6, 0.8])
    assert modes[0][2].startswith("score " + judged(0.9, [0.85, 0.95], *CONTROL, *mode_words))
    assert modes[1][2].startswith("score " + judged(0.8, [0.75, 0.85], *CONTROL, *mode_words))
    assert (
        modes[0][2]
        == "score 0.900 [0.85, 0.95] vs words 0.700 [0.60, 0.80] vs control 0.450 [0.38, 0.52] · simulation r 0.50 vs 0.10"
    )
    heads = page.eval_on_selector_all(".mode h4", "hs => hs.map(h => h.textContent)")
    assert [h.rsplit(" · source ", 1)[1] for h in heads] == SOURCES
    assert page.inner_text(".mode[data-mode='1'] .words") == f"words: {WORDS_BASELINE} (1) — 0.700 [0.60, 0.80]"
    status = page.inner_text("#status")
    assert f"NeuronScope score {judged(*SCORE, *CONTROL, *WORDS)} (scorer reader, self-check passed)" in status
    assert f"words: {WORDS_BASELINE} — 0.640 [0.55, 0.72]" in status
    assert "control: kitchen furniture — 0.450 [0.38, 0.52]" in status
    tokens = shading(page)
    top = max(tokens)
    assert top[1] == max(t[1] for t in tokens) == 1 and top[2] == "217,72,15"  # the max token is the darkest
    assert all(t[1] < top[1] for t in tokens if t[0] < top[0] and t[0] > 0)
    negative = [t for t in tokens if t[0] < 0]
    assert negative and all(t[2] == "37,99,235" and 0 < t[1] < 1 for t in negative)  # another colour
    baseline = page.inner_text("#baseline")
    assert "single pass: animals" in baseline and f"score {judged(0.8, [0.7, 0.88], *CONTROL, *WORDS)}" in baseline
    assert page.locator("#histogram rect").count() == 24
    assert page.locator("#top-tokens li").count() > 5 and "dog" in page.inner_text("#top-tokens")
    outputs = page.eval_on_selector_all(
        "#output-tokens p", "ps => ps.map(p => [p.firstChild.textContent, ...[...p.children].map(c => c.textContent)])"
    )
    assert outputs == [["promotes: ", " fetch", "Fetch", " bark"], ["suppresses: ", " quiet"]]
    groups = page.eval_on_selector_all(".group h3", "hs => hs.map(h => h.textContent)")
    assert groups == ["Random exemplars", "Quantile exemplars"]
    href = page.get_attribute("#transcript", "href")
    assert (run / "atlas" / href).resolve() == run / "transcripts/layer_003/neuron_00001.jsonl"
    assert page.locator("#similar a").count() == 2


def test_single_pass_neurons_and_runs_before_the_judge(tmp_path, watched):
    path = tmp_path / "run"
    store = Store.open(str(path))
    make_run(store)
    write_result(store, 3, 3, [single_pass_row(3, 3)], [])  # triaged: the single pass only
    as_old_schema(store, [(3, 0)])  # written before the words baselines, intervals and sources
    build_atlas(str(path))
    page = watched.page
    page.goto(url(path / "atlas"))
    page.wait_for_selector("#neurons tbody tr")
    assert cells(page, "L3_N3")[2] == f"single pass: {SINGLE_PASS_TEXT}"
    assert cells(page, "L3_N3")[3:7] == ["–", half_width(0.77, [0.69, 0.85]), half_width(0.6, [0.5, 0.7]), "0.45±.07"]
    assert cells(page, "L3_N0")[3:7] == ["0.90", "0.80", "–", "0.45"]  # no intervals: the scores alone
    page.fill("#f-min", "0.75")  # a single-pass neuron is filtered by its single-pass score
    assert count(page) == "4 of 5 neurons"
    page.fill("#f-min", "0.78")
    assert count(page) == "3 of 5 neurons"
    page.goto(url(path / "atlas", "#/L3/N3"))
    page.wait_for_function("document.getElementById('title')?.textContent === 'Layer 3 · Neuron 3'")
    watched.shot("neuron-single-pass")
    assert page.inner_text("#status h3") == "Single-pass explanation only" and page.locator(".mode").count() == 0
    assert f"words: {WORDS_BASELINE} — 0.600 [0.50, 0.70]" in page.inner_text("#status")
    baseline = page.inner_text("#baseline")
    assert SINGLE_PASS_TEXT in baseline and f"score {judged(0.77, [0.69, 0.85], *CONTROL, 0.6, [0.5, 0.7])}" in baseline
    page.goto(url(path / "atlas", "#/L3/N0"))
    page.wait_for_function("document.getElementById('title')?.textContent === 'Layer 3 · Neuron 0'")
    watched.shot("neuron-old-run")
    assert page.inner_text(".mode .scores") == f"score {judged(0.9, None, 0.45, None)} · simulation r 0.50 vs 0.10"
    assert page.locator(".words").count() == 0 and " · source" not in page.inner_text(".mode h4")
    assert f"NeuronScope score {judged(0.9, None, 0.45, None)} (scorer reader" in page.inner_text("#status")


def test_a_neuron_s_negative_side_has_a_section_of_its_own(tmp_path, watched):
    path = tmp_path / "run"
    store = Store.open(str(path))
    with_negative_side(store, make_run(store))
    build_atlas(str(path))
    page = watched.page
    page.goto(url(path / "atlas"))
    page.wait_for_selector("#neurons tbody tr")
    assert f"fires negative on: {NEGATIVE_TEXT}" in cells(page, "L3_N0")[2]
    page.goto(url(path / "atlas", "#/L3/N0"))
    page.wait_for_selector("#negative .mode")
    watched.shot("neuron-negative-side")
    side = page.inner_text("#negative")
    assert side.startswith("Negative side: fires negative on") and NEGATIVE_TEXT in side
    assert f"vs control {NEGATIVE_CONTROL_TEXT}" in page.inner_text("#negative-status")
    assert "fires negative on: word (3)" in page.inner_text("#negative .mode")
    # the positive side's modes hold top exemplars, the negative side's its most negative ones
    assert page.locator("#negative .mode .exemplar").count() == 6 and page.locator(".mode").count() == 2
    assert NEGATIVE_TEXT not in page.inner_text("#status")


def test_prev_next_and_deep_links(run, watched):
    page = watched.page
    page.goto(url(run / "atlas", "#/L3/N0"))
    page.wait_for_selector("#title")
    assert page.locator("#prev").count() == 0 and "first" in page.inner_text("nav.pager")
    for expected in ("Layer 3 · Neuron 1", "Layer 3 · Neuron 2"):
        page.click("#next")
        page.wait_for_function("t => document.getElementById('title')?.textContent === t", arg=expected)
    page.click("#prev")
    page.wait_for_function("document.getElementById('title')?.textContent === 'Layer 3 · Neuron 1'")
    assert page.evaluate("location.hash") == "#/L3/N1"
    page.goto(url(run / "atlas", "#/L5/N7"))
    page.wait_for_function("document.getElementById('title')?.textContent === 'Layer 5 · Neuron 7'")
    assert page.locator("#next").count() == 0 and "failed" in page.inner_text("#status")
    page.goto(url(run / "atlas", "#/L3/N3"))
    page.wait_for_function("document.getElementById('title')?.textContent === 'Layer 3 · Neuron 3'")
    assert "Not explained" in page.inner_text("#status") and page.locator(".exemplar").count() > 0
    page.click("text=all neurons")
    page.wait_for_selector("#index-view:not([hidden])")


def test_hostile_corpus_text_renders_as_text(run, watched):
    page = watched.page
    page.goto(url(run / "atlas", "#/L3/N2"))
    page.wait_for_selector(".mode .exemplar")
    watched.shot("neuron-hostile")
    texts = page.eval_on_selector_all(".tok", "ts => ts.map(t => t.textContent)")
    assert " " + SCRIPT_TOKEN in texts and " " + IMG_TOKEN in texts
    assert page.inner_text(".mode .explanation") == HOSTILE_EXPLANATION
    page.goto(url(run / "atlas"))
    page.wait_for_selector("#neurons tbody tr")
    assert HOSTILE_EXPLANATION in page.inner_text("#neurons")
    page.goto(url(run / "atlas", "#/L3/N1"))  # its similar neurons list the hostile explanation
    page.wait_for_selector("#similar")
    assert HOSTILE_EXPLANATION in page.inner_text("#similar")
    injected = page.evaluate("""() => ({
        img: document.querySelectorAll('img').length,
        b: document.querySelectorAll('main b').length,
        scripts: [...document.scripts].filter(s => s.textContent.includes('alert')).length})""")
    assert injected == {"img": 0, "b": 0, "scripts": 0}
    assert not watched.problems  # no alert() ran (a dialog would be listed)


def test_missing_shard_shows_an_error(run, watched, tmp_path):
    atlas = tmp_path / "atlas"
    shutil.copytree(run / "atlas", atlas)
    (atlas / "data" / "L3_S0.js").unlink()
    watched.allow.append("ERR_FILE_NOT_FOUND")  # Chromium's own report of the missing file
    page = watched.page
    page.goto(url(atlas, "#/L3/N1"))
    page.wait_for_selector("#error:not([hidden])")
    assert "data/L3_S0.js" in page.inner_text("#error")
    watched.shot("missing-shard")
    (atlas / "data" / "index.js").unlink()
    page.goto(url(atlas))
    page.reload()
    page.wait_for_selector("#error:not([hidden])")
    assert "data/index.js" in page.inner_text("#error") and page.is_hidden("#loading")
    assert any("ERR_FILE_NOT_FOUND" in p for p in watched.problems)


def test_served_search_by_meaning(run, watched, capsys):
    server = start(str(run), port=0)
    try:
        page = watched.page
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        page.wait_for_selector("#neurons tbody tr")
        query = "calendar months of the year"
        page.fill("#f-search", query)
        page.wait_for_function("document.getElementById('search-mode').textContent === 'search by meaning'")
        ids = page.eval_on_selector_all("#neurons tbody tr", "rows => rows.map(r => r.dataset.id)")
        watched.shot("served-search")
        assert ids[0] == "L3_N0"
        assert main(["search", str(run), query, "-k", "50"]) == 0
        cli = [ln.split()[:2] for ln in capsys.readouterr().out.splitlines()]
        assert ids == list(dict.fromkeys(f"{layer}_{neuron}" for layer, neuron in cli))  # the CLI's ranking
        page.fill("#f-search", "colour words")
        page.wait_for_function(
            "document.querySelector('#neurons tbody tr td:nth-child(3)').textContent.startsWith('mode 1:')"
        )
        assert page.eval_on_selector("#neurons tbody tr", "r => r.dataset.id") == "L3_N1"
    finally:
        server.shutdown()


def test_a_large_index_draws_its_rows_a_page_at_a_time(run, watched, tmp_path):
    import json

    atlas = tmp_path / "atlas"
    shutil.copytree(run / "atlas", atlas)
    shard = atlas / "data" / "index.js"
    prefix, body = shard.read_text().split("=", 1)
    index = json.loads(body.rstrip().rstrip(";"))
    cols = index["columns"]
    index["columns"] = {k: [v[0]] * 450 for k, v in cols.items()} | {"layer": [9] * 450, "neuron": list(range(450))}
    shard.write_text(f"{prefix}={json.dumps(index)};\n")
    page = watched.page
    page.goto(url(atlas))
    page.wait_for_selector("#neurons tbody tr")
    rows = lambda: page.locator("#neurons tbody tr").count()
    assert rows() == 200 and count(page) == "450 of 450 neurons (first 200 shown)"
    assert page.inner_text("#more") == "show 200 more"
    page.click("#more")
    assert rows() == 400 and page.inner_text("#more") == "show 50 more"
    page.click("#more")
    assert rows() == 450 and count(page) == "450 of 450 neurons" and page.is_hidden("#more")
    page.select_option("#f-explained", "no")  # a new filter starts over from its first page
    assert rows() == 0 and count(page) == "0 of 450 neurons" and page.is_hidden("#more")


def test_each_modes_causal_check_reads_as_show_writes_it(tmp_path, watched):
    """The known neuron of tests/causal_helpers.py, checked: its mode's causal line on the page is
    `show`'s, its control beside it."""
    from causal_helpers import KNOWN, LAYER, known_neuron_run
    from transformers import AutoTokenizer

    from neuronscope import layout
    from neuronscope.config import load_config
    from neuronscope.models.bundled import resolve_model
    from neuronscope.report import causal_vs_control
    from neuronscope.stages import run_causal

    tok = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m").path)
    store = known_neuron_run(tmp_path, tok, "llama")
    run_causal(load_config(None), store.uri, store.uri, lambda _: None)
    build_atlas(store.uri)
    row = store.read_parquet(layout.causal_key(LAYER)).to_pandas().set_index("neuron").loc[KNOWN]
    watched.page.goto(url(tmp_path / "run" / "atlas", f"#/L{LAYER}/N{KNOWN}"))
    line = watched.page.inner_text(".mode .causal")
    assert line == f"causal (mean ablation, {row['n_windows']} windows): {causal_vs_control(row)}"
