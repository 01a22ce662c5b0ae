"""The report page as a user sees it: figures that order tasks naturally, give every task its
own colour, count in whole numbers and label their axes; a page that a headless browser renders
with every figure decoded, nothing wider than the window and long transcripts cut."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from asrd.config import Thresholds
from asrd.report import plots
from asrd.report.data import ReportData, TaskSpan
from asrd.report.page import MAX_CELL_CHARS, render

TASKS = 32
LONG_TEXT = " ".join(f"word{k}" for k in range(490))


def sample_data() -> ReportData:
    """A merged run of 32 SLURM tasks of 3 shards each, two error rows, integer signals with
    one value, and a flagged row whose transcript is 490 words long."""
    rng = np.random.default_rng(0)
    n = 400
    spans = [TaskSpan(f"32_{t}", 3 * t + k, 40 * k + t, 40 * k + t + 38, float(rng.uniform(3, 6)))
             for t in range(TASKS) for k in range(3)]
    return ReportData(
        title="run: label quality",
        summary={"rows": n, "ok": n - 2, "failed": 2, "kept": 390, "preset": "default",
                 "dropped_by_preset": 8, "audio_hours": 1.2,
                 "dropped_by_flag": {"low_logprob": 5, "empty": 3}},
        thresholds=Thresholds(),
        signals={"avg_logprob": rng.normal(-0.4, 0.2, n), "ngram_repeats": np.ones(n),
                 "text_language_p": np.full(n, 0.99998),
                 "longest_word": rng.integers(5, 12, n).astype(float),
                 "wer": rng.uniform(0, 0.3, n)},
        flags_by_language={"en": {"empty": 3, "low_logprob": 5}, "de": {"low_logprob": 1}},
        rows_by_language={"en": 300, "de": 98},
        errors={"missing file": 1, "corrupt audio": 1},
        spans=spans, shard_wall_s={s.shard: s.end - s.start for s in spans},
        flagged=[{"id": "long", "flags": ["repeats"], "text": LONG_TEXT,
                  "reference": LONG_TEXT, "speech_s": 120.0},
                 {"id": "short", "flags": ["empty"], "text": "", "reference": "hello",
                  "speech_s": 0.0}])


@pytest.fixture
def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def test_throughput_names_tasks_in_natural_order_each_in_its_own_colour(plt):
    fig = plots._throughput(plt, sample_data())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"32_{k}" for k in range(TASKS)]
    colours = {c.get_label(): tuple(np.round(c.get_colors()[0], 3)) for c in ax.collections
               if not c.get_label().startswith("_")}  # a task's first line carries its name
    assert len(colours) == TASKS and len(set(colours.values())) == TASKS
    assert ax.get_ylabel() and ax.get_xlabel()


def test_counts_have_whole_ticks_axes_are_labelled_and_legends_sit_beside(plt):
    data = sample_data()
    errors = plots._errors(plt, data).axes[0]
    assert errors.get_ylabel() == "reason"
    assert all(float(x).is_integer() for x in errors.get_xticks())  # 2 rows: not 0.0-1.0

    hist = plots._histograms(plt, data)
    shown = [ax for ax in hist.axes if ax.axison]
    assert len(shown) == 5 and all(ax.get_ylabel() == "rows" for ax in shown)
    for ax in shown:
        assert all(float(y).is_integer() for y in ax.get_yticks()), ax.get_title()
    repeats = next(ax for ax in shown if ax.get_title().startswith("most repeats"))
    assert all(float(x).is_integer() for x in repeats.get_xticks())
    same = next(ax for ax in shown if ax.get_title().startswith("text language"))
    (bar,) = [p for p in same.patches if p.get_height()]  # all 400 rows in one bar ...
    low, high = same.get_xlim()
    assert bar.get_height() == 400 and bar.get_width() >= (high - low) / 50  # ... one can see

    fig = plots._flags(plt, data)
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_ylabel() == "language"
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # not on a bar


CHECKS = """<script>
window.addEventListener("load", () => {
  const out = {
    images: [...document.images].map(i => ({alt: i.alt, decoded: i.complete && i.naturalWidth > 0,
                                            right: i.getBoundingClientRect().right})),
    cells: [...document.querySelectorAll("td")].map(td => ({text: td.textContent,
                                                            title: td.title})),
    emptyRows: [...document.querySelectorAll("tr")].filter(tr => !tr.textContent.trim()).length,
    scrollWidth: document.documentElement.scrollWidth, width: window.innerWidth};
  const pre = document.createElement("pre");
  pre.id = "checks";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script></body>"""


def browser() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                 "google-chrome"))), None)


@pytest.mark.skipif(browser() is None, reason="no Chromium here (scripts/bootstrap.sh test "
                                             "installs it)")
def test_the_page_in_a_headless_browser(tmp_path):
    data = sample_data()
    data.figures = plots.figures(data)
    page = tmp_path / "report.html"
    page.write_text(render(data).replace("</body>", CHECKS), encoding="utf-8")
    dom = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu",
                          "--window-size=1200,900", "--virtual-time-budget=30000",
                          "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    found = re.search(r'<pre id="checks">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    checks = json.loads(html.unescape(found.group(1)))
    assert {i["alt"] for i in checks["images"]} == {
        "signals", "flags_by_language", "error_reasons", "throughput_over_time",
        "shard_wall_times"}
    assert all(i["decoded"] and i["right"] <= checks["width"] for i in checks["images"])
    assert checks["scrollWidth"] <= checks["width"]  # nothing wider than the window
    assert checks["emptyRows"] == 0  # the totals table has no blank header
    assert max(len(c["text"]) for c in checks["cells"]) <= MAX_CELL_CHARS + 2
    cut = [c for c in checks["cells"] if c["title"]]
    assert len(cut) == 2 and all(c["title"] == LONG_TEXT and c["text"].endswith("\u2026")
                                 for c in cut)
