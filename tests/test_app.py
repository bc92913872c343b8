"""The demo app (scripts/app.py) in a real browser: Streamlit serves it, headless Chromium drives it.

Every number the page shows is checked against the same library call made here, in the test.
Needs Chromium from the system packages (`apt-get install chromium`; `.ci/run` installs it).
Set MINIBERT_APP_SCREENSHOT=PATH to keep the search tab's screenshot (the README's is made so).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from minibert.hub import DEFAULT_MODEL
from minibert.multitask import MultiTaskModel
from minibert.predict import predict, predict_pairs
from minibert.search import semantic_search
from minibert.show import format_prediction
from minibert.similarity import cos_sim

pytest.importorskip("streamlit", reason="the app needs streamlit (pip install -e '.[test]')")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the test extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium on this machine: `apt-get install chromium` (.ci/run does)", allow_module_level=True)

APP = Path(__file__).parents[1] / "scripts" / "app.py"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]  # no network here: nothing may try to phone out
TASKS = [
    {"name": "topic", "type": "classification", "labels": ["World", "Sports", "Business", "Sci/Tech"]},
    {"name": "ner", "type": "token_classification", "labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]},
    {"name": "nli", "type": "nli"},
]
CORPUS = ["A man is eating food.", "A man is riding a horse.", "A woman is playing violin.",
          "A cheetah is running behind its prey.", "The new movie is awesome."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def multitask_dir(minilm_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("app") / "multitask"
    MultiTaskModel.from_encoder(minilm_dir, TASKS, seed=3).save(folder)
    return folder


@pytest.fixture(scope="module")
def app_url(minilm_dir, multitask_dir):  # minilm_dir: the default model must be there
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
         "--", "--model", DEFAULT_MODEL, "--multitask", str(multitask_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the app did not start: " + server.stdout.read())
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def page(app_url):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 820})
        page.set_default_timeout(60_000)
        page.goto(app_url)
        page.get_by_role("button", name="Compare").wait_for()
        yield page
        browser.close()


def shown(page, label: str):
    """The field of that label in the tab shown: the Similarity and Multi-task tabs both have a "Sentences,
    one a line", and a hidden tab's fields stay in the page: chosen by being visible, not by their order (a
    fresh clone's runs twice found the first of the two hidden for a minute)."""
    return page.get_by_label(label).filter(visible=True)


def squash(text: str) -> str:
    """Runs of spaces as one, as HTML shows them."""
    return " ".join(text.split())


# Every visible table's body rows as cell texts (index cells, if any, left out), read in one go inside the
# page: Streamlit replaces a table's rows while it fills them, and a row found by one call could be gone by
# the next (a locator to it would then wait for it until the test times out).
READ_TABLES = """() => [...document.querySelectorAll('table')]
    .filter(t => { const box = t.getBoundingClientRect(); return box.width > 0 && box.height > 0
        && getComputedStyle(t).visibility !== 'hidden' })
    .map(t => [...t.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(c => c.innerText)))"""


def tables_now(page) -> list[list[list[str]]]:
    return [[[squash(cell) for cell in row] for row in table] for table in page.evaluate(READ_TABLES)]


def shown_tables(page, timeout: float = 30.0) -> list[list[list[str]]]:
    """The cell texts of every visible table, once the page has settled: Streamlit fills a table's rows
    after the table itself appears, so read until two reads agree and no row is empty."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        now = tables_now(page)
        if now == last and all(row for table in now for row in table):
            return now
        last = now
        time.sleep(0.25)
    return last


def test_similarity_matrix_is_the_cosine_matrix(page, minilm):
    sentences = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell sharply."]
    shown(page, "Sentences, one a line").fill("\n".join(sentences))
    page.get_by_role("button", name="Compare").click()
    page.locator("table", has_text="The stock market fell").wait_for()
    page.get_by_text("Most similar pair").wait_for()
    rows = shown_tables(page)[0]
    sim = cos_sim(minilm.encode(sentences))
    assert [row[1:] for row in rows] == [[f"{v:.4f}" for v in r] for r in sim]
    best = page.get_by_text("Most similar pair").inner_text()
    assert best == f"Most similar pair: [0] and [1], cosine {sim[0, 1]:.4f}"


def test_search_shows_the_semantic_search_hits(page, minilm, tmp_path):
    page.get_by_role("tab", name="Search").click()
    page.get_by_label("Queries, one a line").fill("Someone rides a horse.\nA film I liked")
    page.get_by_label("Corpus, one entry a line").fill("\n".join(CORPUS))
    page.get_by_role("button", name="Search").click()
    page.locator("table", has_text="The new movie is awesome.").wait_for()
    shown = shown_tables(page)
    expected = semantic_search(minilm.encode(["Someone rides a horse.", "A film I liked"]), minilm.encode(CORPUS),
                               top_k=3)
    assert shown == [[[str(r + 1), f"{h['score']:.4f}", str(h["corpus_id"]), CORPUS[h["corpus_id"]]]
                      for r, h in enumerate(hits)] for hits in expected]
    assert shown[0][0][3] == "A man is riding a horse." and shown[1][0][3] == "The new movie is awesome."
    page.get_by_role("heading", name="minibert").scroll_into_view_if_needed()
    page.screenshot(path=os.environ.get("MINIBERT_APP_SCREENSHOT", str(tmp_path / "search.png")))


def test_search_reports_bad_input(page, tmp_path):
    page.get_by_role("tab", name="Search").click()
    page.get_by_label("Corpus, one entry a line").fill("   \n")
    page.get_by_role("button", name="Search").click()
    page.get_by_text("the corpus and the queries need at least one line each").wait_for()
    upload = tmp_path / "latin1.txt"
    upload.write_bytes("A man is eating.\nCaf\u00e9 au lait\n".encode("latin-1"))
    page.locator("input[type=file]").set_input_files(upload)
    page.get_by_text("latin1.txt", exact=True).wait_for()  # the upload has reached the server
    page.get_by_role("button", name="Search").click()
    page.get_by_text("latin1.txt:2: not UTF-8 text").wait_for()


def test_multitask_tab_shows_each_tasks_prediction(page, multitask_dir):
    model = MultiTaskModel.load(multitask_dir)
    page.get_by_role("tab", name="Multi-task").click()
    sentences = ["Angela Merkel met Emmanuel Macron in Paris.", "The Lakers won again."]
    shown(page, "Sentences, one a line").fill("\n".join(sentences))
    page.get_by_label("Pairs: first sentences").fill("A man is playing a guitar.")
    page.get_by_label("Pairs: second sentences (line i pairs with line i)").fill("Nobody is playing.")
    page.get_by_role("button", name="Predict").click()
    page.locator("table", has_text="Nobody is playing.").wait_for()
    single, pairs = shown_tables(page)
    assert single == [[row["text"], squash(format_prediction(model.tasks["topic"], row["topic"])),
                       squash(format_prediction(model.tasks["ner"], row["ner"]))] for row in predict(model, sentences)]
    [row] = predict_pairs(model, ["A man is playing a guitar."], ["Nobody is playing."])
    assert pairs == [[f"{row['a']} | {row['b']}", squash(format_prediction(model.tasks["nli"], row["nli"])),
                      f"{row['similarity']:.4f}"]]
