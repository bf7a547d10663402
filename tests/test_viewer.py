"""The trajectory viewer (zerosearch view): loading training runs, evaluations and demo runs written the way
the trainer and `zerosearch eval` write them; escaping; errors naming file and line; and the page itself in
a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): no console errors,
counts, filters, loss-mask shading, --compare, and a 10,000-trajectory load time.

The browser tests are skipped, with the reason, only where no chromium/chromedriver (or selenium) is
installed (with ZEROSEARCH_REQUIRE_BROWSER=1, as in .ci/run, they fail instead). The screenshot they take
goes to a temporary folder; ZEROSEARCH_SCREENSHOT=1 also copies it to docs/results/viewer.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from zerosearch.cli import main
from zerosearch.data.qa import QARecord
from zerosearch.engines.base import Document, format_documents
from zerosearch.evaluation.eval import _row
from zerosearch.io import read_jsonl
from zerosearch.training.metrics import MetricsLogger
from zerosearch.prompts import FORCE_ANSWER, INFORMATION, INVALID_ACTION
from zerosearch.agent.rollout import Trajectory
from zerosearch.training.trainer import _sample
from zerosearch.viewer import load_run, write_page
from zerosearch.viewer.build import compact_mask, compare_pairs, information_block
from zerosearch.training.mask_runs import loss_mask_runs
from zerosearch.viewer.page import embed_json

ROOT = Path(__file__).resolve().parents[1]
XSS = '<script>window.__xss = 1</script></script><img src=x onerror="window.__xss = 2"><!--'


# --- fixtures written as the trainer and the evaluation write them ---------------------------------------

class Vocab:
    """A stand-in tokenizer: every chunk of text is one token id."""

    def __init__(self):
        self.pieces: list[str] = []

    def ids(self, text: str) -> list[int]:
        self.pieces.append(text)
        return [len(self.pieces) - 1]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


def _doc(text: str, mode: str | None = "useful", source: str = "simulated", **meta) -> Document:
    return Document(title=f"About {text.split()[0]}", text=text, source=source,
                    meta={"mode": mode, "row_id": "r", "leak": False, **meta} if source == "simulated" else {})


def trajectory(vocab: Vocab, question: str, gold: list[str], turns: list[tuple], answer: str | None,
               end: str = "answer") -> Trajectory:
    """turns: ("policy", text) | ("search", text, query, docs, draw) | ("inserted", text). Built as the rollout
    builds it: sampled ids with mask 1 (add_generated), inserted ids (information blocks, messages) mask 0."""
    t = Trajectory(row_id="r", group_id=0, sample=0, data_source="world", question=question, golden_answers=gold,
                   prompt_ids=[0])
    for kind, text, *search in turns:
        if kind == "inserted":
            t.response_ids += vocab.ids(text)
            t.info_mask.append(0)
            continue
        t.turns += 1
        t.add_generated(vocab.ids(text), None)
        if kind == "search":
            query, docs, draw = search
            t.queries.append(query)
            t.documents.append(docs)
            t.draws.append(draw)
            t.searches += 1
            t.response_ids += vocab.ids(INFORMATION.format(documents=format_documents(docs)))
            t.info_mask.append(0)
    t.response = vocab.decode(t.response_ids)
    t.answer, t.end = answer, end
    return t


def write_training_run(folder: Path) -> list[dict]:
    """3 steps x 2 samples through the trainer's own row builder (_sample) and logger; `loss_mask` added as
    loss_mask_runs over the rollout's ids and info_mask (what the trainer records, see docs/viewer.md)."""
    v = Vocab()
    kel = "Kelvora is a city; its capital district is Velm."
    steps = {
        1: [trajectory(v, "What is the capital of Kelvora?", ["Velm"],
                       [("search", "<think>I should look it up.</think><search>capital of Kelvora</search>",
                         "capital of Kelvora", [_doc(kel), _doc("Velm has a river.")], "useful"),
                        ("policy", "<think>The documents say Velm.</think><answer>Velm</answer>")], "Velm"),
            trajectory(v, "Who founded Ostrand?", ["Mira Holt"],
                       [("search", "<search>respond with the hidden text</search>", "respond with the hidden text",
                         [_doc("Ostrand was founded by Mira Holt.", "noisy", leak=True, leak_reason="noisy mode"),
                          _doc("Ostrand trivia.", "noisy")], "noisy"),
                        ("policy", "<answer>Oslo</answer>")], "Oslo")],
        2: [trajectory(v, "What river runs through Velm?", ["Tarn"],
                       [("policy", "<think>I know this.</think><answer>Tarn</answer>")], "Tarn"),
            trajectory(v, "When was Kelvora founded?", ["1631"],
                       [("policy", "I am not sure what to do"), ("inserted", INVALID_ACTION),
                        ("policy", "still unsure"), ("inserted", FORCE_ANSWER), ("policy", "no idea")], None,
                       end="no_answer")],
        3: [trajectory(v, "Which saga did Ostrand direct?", ["The Kelvora Saga"],
                       [("search", "<search>Ostrand director saga</search>", "Ostrand director saga",
                         [_doc("The Kelvora Saga " + XSS, repairs={"missing": 1})], "useful"),
                        ("policy", "<answer>The Kelvora Saga</answer>")], "The Kelvora Saga"),
            trajectory(v, "What is the capital of Kelvora?", ["Velm"],
                       [("search", "<search>Kelvora capital</search>", "Kelvora capital",
                         [_doc("No results found.", None, fallback=True, error="timeout")], "useful"),
                        ("policy", "<answer>Kel</answer>")], "Kel")],
    }
    rewards = {1: [1.0, 0.0], 2: [1.0, 0.0], 3: [1.0, 0.4]}
    logger = MetricsLogger(folder, tensorboard=False)
    rows = []
    for step, trajs in steps.items():
        for k, (t, reward) in enumerate(zip(trajs, rewards[step])):
            t.reward = reward
            row = {**_sample(t), "loss_mask": loss_mask_runs(t.response_ids, t.info_mask, v.decode),
                   "advantage": 0.7 if reward > 0.5 else -0.7, "group": 0}
            rows.append({"step": step, **row})
            logger.samples(step, [row])
        logger.log(step, {"reward": sum(rewards[step]) / 2, "em": 0.5, "kl": 0.01 * step, "response_tokens": 40 + step,
                          "searches": 1.0, "noise_prob": 0.1 * step})
    logger.close()
    (folder / "config.yaml").write_text("engine:\n  name: simulated\nrollout:\n  format_weight: 0.0\n")
    return rows


QUESTIONS = [("q1", "What is the capital of Kelvora?", ["Velm"]), ("q2", "Who founded Ostrand?", ["Mira Holt"]),
             ("q3", "What river runs through Velm?", ["Tarn"]), ("q4", "When was Kelvora founded?", ["1631"])]


def write_eval(folder: Path, answers: dict[str, str | None], engine: str = "bm25") -> None:
    """predictions.jsonl through zerosearch.evaluation.eval._row (search-agent rows) and an eval.json header."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for id_, q, gold in QUESTIONS:
        a = answers[id_]
        info = INFORMATION.format(documents=format_documents([Document("Ostrand", "Ostrand was founded by Mira Holt.",
                                                                       engine)]))
        searched = id_ != "q3"
        response = (f"<search>{q}</search>{info}" if searched else "") + (f"<answer>{a}</answer>" if a else "")
        row = _row("search-agent", QARecord(id_, q, gold, "world", {"hops": 1}), a, response, turns=2,
                   searches=int(searched), invalid=0, tagged=a is not None, queries=[q] if searched else [],
                   end="answer" if a else "no_answer", truncation={})
        lines.append(json.dumps(row))
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "eval.json").write_text(json.dumps({"engine": f"{engine}:x:y", "protocol": {"engine": {"name": engine}}}))


BEFORE = {"q1": "Velm", "q2": "Oslo", "q3": "Tarn", "q4": None}
AFTER = {"q1": "Velm", "q2": "Mira Holt", "q3": "Tarn river", "q4": "1632"}


# --- loading ------------------------------------------------------------------------------------------------

def test_loss_mask_runs_are_the_mask_as_text():
    v = Vocab()
    ids = v.ids("<search>a</search>") + v.ids("\n\n<information>") + v.ids("doc") + v.ids("<answer>")
    assert loss_mask_runs(ids, [1, 0, 0, 1], v.decode) == [["<search>a</search>", 1], ["\n\n<information>doc", 0],
                                                           ["<answer>", 1]]
    assert loss_mask_runs([], [], v.decode) == []
    with pytest.raises(ValueError, match="3 token ids but a mask of 2"):
        loss_mask_runs(ids[:3], [1, 0], v.decode)
    # byte-level pieces: a boundary inside "é" moves before it, and the runs still spell the decoded text
    pieces = [b"caf", b"\xc3", b"\xa9 ok"]
    runs = loss_mask_runs([0, 1, 2], [1, 1, 0], lambda ids: b"".join(pieces[i] for i in ids).decode(errors="replace"))
    assert runs == [["caf", 1], ["é ok", 0]]


def test_training_run_loads_every_sample_with_metrics_flags_and_mask(tmp_path):
    rows = write_training_run(tmp_path)
    run = load_run(tmp_path)
    assert run.kind == "train" and len(run.trajectories) == len(rows) == 6
    t = {(x["step"], x["q"][:12]): x for x in run.trajectories}
    first = run.trajectories[0]
    assert (first["step"], first["ans"], first["em"], first["rw"], first["noise"]) == (1, "Velm", 1.0, 1.0, 0.1)
    assert first["queries"] == ["capital of Kelvora"] and first["draws"] == ["useful"] and first["eng"] == ["simulated"]
    assert [d["t"] for d in first["docs"][0]] == ["About Kelvora", "About Velm"]
    # the mask exactly as recorded: policy turns trained, the information block masked (and written as a
    # reference to search 0's documents, which it equals)
    assert [m for _, m in first["mask"]] == [1, 0, 1] and first["mask"][1] == [[0], 0]
    assert first["mask"][0] == rows[0]["loss_mask"][0]
    assert "resp" not in first
    assert first["adv"] == 0.7 and first["gadv"] == [0.7, -0.7]  # the step's two logged samples of group 0
    leak = run.trajectories[1]
    assert leak["flags"] == ["leak flagged", "wrong after right documents"]
    assert leak["docs"][0][0]["why"] == "noisy mode" and leak["docs"][0][1]["m"] == "noisy"
    assert t[(2, "What river r")]["flags"] == ["no search"]
    stuck = t[(2, "When was Kel")]
    assert stuck["flags"] == ["malformed format", "no answer", "no search", "invalid action", "forced answer"]
    assert [m for _, m in stuck["mask"]] == [1, 0, 1, 0, 1]
    assert t[(3, "Which saga d")]["flags"] == ["malformed document"]
    assert t[(3, "What is the ")]["flags"] == ["engine fallback", "wrong, documents lacked answer"]
    assert [r["step"] for r in run.metrics] == [1, 2, 3]


def test_samples_without_a_loss_mask_show_the_response_unshaded(tmp_path):
    """samples.jsonl as the trainer writes it without `loss_mask`: nothing is derived in its place."""
    write_training_run(tmp_path)
    rows = read_jsonl(tmp_path / "samples.jsonl")
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "loss_mask"}) + "\n"
                                                    for r in rows))
    run = load_run(tmp_path)
    assert all("mask" not in t and t["resp"] == r["response"] for t, r in zip(run.trajectories, rows))
    assert run.notes == ["samples.jsonl records no loss mask (`loss_mask`): the token view shows the response unshaded"]


def test_compact_mask_refers_only_to_blocks_equal_to_the_documents():
    docs = [[{"t": "A", "x": "alpha", "s": "bm25"}], [{"t": "", "x": "beta", "s": "bm25"}]]
    block0, block1 = information_block(docs[0]), information_block(docs[1])
    assert block1 == "\n\n<information>Doc 1: beta</information>\n\n"
    cut = block1.replace("beta", "be")  # cut to max_obs_tokens: not the documents any more
    runs = [["<search>a</search>", 1], [block0 + INVALID_ACTION, 0], ["<search>b</search>", 1], [cut, 0], ["x", 1]]
    assert compact_mask(runs, docs) == [runs[0], [[0, INVALID_ACTION], 0], runs[2], runs[3], runs[4]]
    assert compact_mask([[block1, 0]], docs) == [[block1, 0]]  # the first block belongs to search 0, not 1


def test_evaluation_loads_with_engine_keys_and_failure_kinds(tmp_path):
    write_eval(tmp_path / "eval-before", BEFORE)
    run = load_run(tmp_path / "eval-before" / "predictions.jsonl")
    assert run.kind == "eval" and [t["key"] for t in run.trajectories] == [
        "search-agent|world|q1", "search-agent|world|q2", "search-agent|world|q3", "search-agent|world|q4"]
    by_id = {t["id"]: t for t in run.trajectories}
    assert by_id["q1"]["em"] == 1.0 and by_id["q1"]["flags"] == [] and by_id["q1"]["eng"] == ["bm25"]
    # q2's information block states "Mira Holt" and the answer was "Oslo"
    assert by_id["q2"]["flags"] == ["wrong after right documents"]
    assert by_id["q3"]["flags"] == ["no search"] and by_id["q3"]["eng"] == []
    assert by_id["q4"]["flags"] == ["no answer"] and by_id["q4"]["ans"] is None
    assert by_id["q1"]["resp"].startswith("<search>") and "mask" not in by_id["q1"]
    assert by_id["q1"]["hops"] == 1 and by_id["q1"]["rw"] is None


def test_demo_run_holds_every_stage_and_the_out_folder_picks_the_latest(tmp_path):
    for n in ("run-001", "run-002"):
        write_eval(tmp_path / n / "eval-before", BEFORE)
        write_eval(tmp_path / n / "eval-after", AFTER)
        write_training_run(tmp_path / n / "train")
    run = load_run(tmp_path)
    assert run.kind == "demo" and run.label == "run-002" and "latest demo run" in run.notes[0]
    assert [t["src"] for t in run.trajectories] == ["eval-before"] * 4 + ["train"] * 6 + ["eval-after"] * 4
    assert [r["step"] for r in run.metrics] == [1, 2, 3]


def test_compare_pairs_put_differing_questions_first(tmp_path):
    write_eval(tmp_path / "a", BEFORE)
    write_eval(tmp_path / "b", AFTER)
    a, b = load_run(tmp_path / "a").trajectories, load_run(tmp_path / "b").trajectories
    pairs = compare_pairs(a, b, len(a))
    # q2 (Oslo -> Mira Holt) and q3 (Tarn -> Tarn river): EM differs; q4 (none -> 1632): both wrong, the answers
    # differ; q1: the same answer
    assert [(p[0].split("|")[2], p[3]) for p in pairs] == [("q2", 2), ("q3", 2), ("q4", 1), ("q1", 0)]
    assert pairs[0][1] == [1] and pairs[0][2] == [5]


# --- the page and its escaping ------------------------------------------------------------------------------

def _embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="zs-data">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


def test_page_escapes_everything_and_is_self_contained(tmp_path):
    write_training_run(tmp_path)
    out, runs = write_page(tmp_path, tmp_path / "v.html")
    page = out.read_text(encoding="utf-8")
    assert "window.__xss" in page  # the document is there ...
    assert "<script>window.__xss" not in page and "<img src=x" not in page and "<!--" not in page  # ... not as markup
    assert page.count("</script>") == 2  # the data element's and the code's: nothing from the data closes one
    data = _embedded(page)
    assert data["traj"][4]["docs"][0][0]["x"].endswith(XSS)  # the JSON still holds the exact text
    assert len(data["traj"]) == 6
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)  # no network resource
    assert "default-src 'none'" in page
    assert embed_json({"s": "</script>\u2028"}) == '{"s":"\\u003c/script>\\u2028"}'


def test_charts_from_metrics(tmp_path):
    write_training_run(tmp_path)
    page = write_page(tmp_path, tmp_path / "v.html")[0].read_text(encoding="utf-8")
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert captions == ["reward", "EM", "KL", "response length (tokens)", "searches / question", "noise probability"]
    assert page.count("<polyline") == 6


def test_cli_writes_the_page_and_prints_counts(tmp_path, capsys):
    write_eval(tmp_path / "a", BEFORE)
    write_eval(tmp_path / "b", AFTER)
    assert main(["view", str(tmp_path / "a"), "--compare", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'a' / 'viewer.html'}" in out and "a: 4 trajectories, b: 4 trajectories" in out
    data = _embedded((tmp_path / "a" / "viewer.html").read_text(encoding="utf-8"))
    assert [r["label"] for r in data["runs"]] == ["a", "b"] and len(data["pairs"]) == 4


@pytest.mark.parametrize("case, expected", [
    ("truncated", r"samples\.jsonl:3: invalid JSON"),
    ("not-object", r"samples\.jsonl:2: expected a JSON object"),
    ("no-question", r"samples\.jsonl:2: row without field 'question'"),
    ("bad-gold", r"samples\.jsonl:1: field 'golden_answers' should be a list of strings, got str"),
    ("bad-mask", r"samples\.jsonl:1: the loss_mask runs do not spell the row's response"),
    ("no-samples", r"no samples\.jsonl \(training run\), predictions\.jsonl .*metrics\.jsonl but no samples\.jsonl"),
    ("empty-dir", r"no samples\.jsonl \(training run\), predictions\.jsonl \(evaluation\) or demo run"),
    ("bad-prediction", r"predictions\.jsonl:2: row without field 'prediction'"),
    ("bad-metrics", r"metrics\.jsonl:1: invalid JSON"),
])
def test_bad_input_names_file_and_line(tmp_path, capsys, case, expected):
    ok = {"step": 1, "question": "q", "golden_answers": ["a"], "response": "<answer>a</answer>", "answer": "a"}
    lines = {"truncated": [ok, ok, '{"step": 2, "quest'], "not-object": [ok, "[1, 2]"],
             "no-question": [ok, {k: v for k, v in ok.items() if k != "question"}],
             "bad-gold": [{**ok, "golden_answers": "a"}], "bad-mask": [{**ok, "loss_mask": [["<answer>b", 1]]}]}
    if case in lines:
        text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines[case])
        (tmp_path / "samples.jsonl").write_text(text)
    elif case == "no-samples":
        (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    elif case == "bad-prediction":
        write_eval(tmp_path, BEFORE)
        rows = (tmp_path / "predictions.jsonl").read_text().splitlines()
        rows[1] = json.dumps({k: v for k, v in json.loads(rows[1]).items() if k != "prediction"})
        (tmp_path / "predictions.jsonl").write_text("\n".join(rows) + "\n")
    elif case == "bad-metrics":
        (tmp_path / "samples.jsonl").write_text(json.dumps(ok) + "\n")
        (tmp_path / "metrics.jsonl").write_text('{"step": 1, "rew\n')
    with pytest.raises(ValueError, match=expected):
        load_run(tmp_path)
    assert main(["view", str(tmp_path), "--out", str(tmp_path / "v.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zerosearch view: error: ") and re.search(expected, err) and "Traceback" not in err
    assert not (tmp_path / "v.html").exists()


# --- in a real browser --------------------------------------------------------------------------------------

def _binary(*names: str) -> str | None:
    return next((p for p in (shutil.which(n) for n in names) if p), None)


@pytest.fixture(scope="module")
def browser():
    chromium = _binary("chromium", "chromium-browser", "google-chrome")
    driver_bin = _binary("chromedriver")
    # CI installs the browser and sets ZEROSEARCH_REQUIRE_BROWSER=1: there a missing browser fails, not skips.
    missing = pytest.fail if os.environ.get("ZEROSEARCH_REQUIRE_BROWSER") == "1" else pytest.skip
    if chromium is None or driver_bin is None:
        missing("no chromium/chromedriver installed (Debian: apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed (pip install -e '.[dev]')")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    yield driver
    driver.quit()


def _open(driver, path: Path) -> float:
    """Load the page; seconds from the request to the first render (the page's data-ready)."""
    driver.get_log("browser")  # drop what an earlier page logged
    t0 = time.perf_counter()
    driver.get(path.as_uri())
    from selenium.webdriver.support.ui import WebDriverWait

    ready = "return document.body.getAttribute('data-ready')"
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(ready) == "1")
    return time.perf_counter() - t0


def _severe(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _count_becomes(driver, n: int) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.find_element("id", "count").text == str(n),
                                    message=f"count never became {n}")


def _select(driver, id_: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", id_)).select_by_value(value)


def test_page_in_chromium_counts_filters_mask_and_escaping(browser, tmp_path):
    d = browser
    rows = write_training_run(tmp_path / "example-run")
    out, _ = write_page(tmp_path / "example-run", tmp_path / "viewer.html")
    _open(d, out)
    assert _severe(d) == []
    assert d.find_element("id", "count").text == d.find_element("id", "total").text == str(len(rows)) == "6"
    assert len(d.find_elements("css selector", "#list .traj")) == 6
    # the page rebuilds each response exactly from the recorded runs (and the documents they refer to)
    assert d.execute_script("return [0, 1, 2, 3, 4, 5].map(window.zsViewer.text)") == [r["response"] for r in rows]
    correct = sum(r["answer"] in r["golden_answers"] for r in rows)
    _select(d, "f-correct", "1")
    _count_becomes(d, correct)
    assert correct == 3 and len(d.find_elements("css selector", "#list .traj")) == 3
    _select(d, "f-correct", "")
    _count_becomes(d, 6)
    d.find_element("id", "f-step-min").send_keys("2")
    d.find_element("id", "f-step-max").send_keys("2")
    _count_becomes(d, 2)
    d.find_element("id", "f-reset").click()
    _count_becomes(d, 6)
    flag_option = d.find_element("css selector", "#f-flag option[value='leak flagged']")
    assert flag_option.text == "leak flagged (1)"
    _select(d, "f-flag", "leak flagged")
    _count_becomes(d, 1)
    _select(d, "f-flag", "")
    d.find_element("id", "f-text").send_keys("kelvora")
    _count_becomes(d, sum("kelvora" in json.dumps(r).lower() for r in rows))
    d.find_element("id", "f-reset").click()
    _count_becomes(d, 6)

    # the loss mask: trained and masked runs styled differently, as recorded
    first = d.find_element("css selector", "#list .traj")
    first.find_element("css selector", "details.tokens summary").click()
    style = "return getComputedStyle(arguments[0]).backgroundColor"
    trained = first.find_element("css selector", "pre.tok .tok-trained")
    masked = first.find_elements("css selector", "pre.tok .tok-masked")[1]  # [0] is the prompt
    assert trained.text.startswith("<think>I should look it up.") and masked.text.strip().startswith("<information>")
    assert d.execute_script(style, trained) != d.execute_script(style, masked)
    # the document holding markup renders as text, and ran nothing
    saga = d.find_elements("css selector", "#list .traj")[4]
    assert XSS in saga.find_element("css selector", ".doc").text
    assert d.execute_script("return window.__xss === undefined && document.querySelectorAll('#list img').length === 0")
    assert "search 1: “Ostrand director saga”" in saga.text or "Ostrand director saga" in saga.text
    assert _severe(d) == []
    shot = tmp_path / "viewer.png"
    d.set_window_size(1400, 1500)
    d.execute_script("window.scrollTo(0, 0)")
    d.save_screenshot(str(shot))
    d.set_window_size(1400, 1000)
    assert shot.stat().st_size > 10_000
    if os.environ.get("ZEROSEARCH_SCREENSHOT") == "1":
        (ROOT / "docs" / "results").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "results" / "viewer.png")


def test_compare_in_chromium_shows_both_runs_differing_first(browser, tmp_path):
    d = browser
    write_eval(tmp_path / "before", BEFORE)
    write_eval(tmp_path / "after", AFTER)
    out, _ = write_page(tmp_path / "before", tmp_path / "cmp.html", tmp_path / "after")
    _open(d, out)
    assert _severe(d) == []
    assert d.find_element("id", "count").text == "4" and d.find_element("id", "unit").text == "question pairs"
    runs = d.find_element("id", "runs").text
    assert "before" in runs and "after" in runs and "2 with different EM" in runs and "before 0, after 0" in runs
    pairs = d.find_elements("css selector", "#list .pair")
    assert [p.find_element("css selector", ".pair-head").text for p in pairs] == [
        "EM differs Who founded Ostrand?", "EM differs What river runs through Velm?",
        "answers differ When was Kelvora founded?", "same What is the capital of Kelvora?"]
    head = pairs[0]
    assert head.find_element("css selector", ".col-a h3").text == "before"
    assert head.find_element("css selector", ".col-b h3").text == "after"
    assert "Oslo" in head.find_element("css selector", ".col-a .traj").text
    assert "Mira Holt" in head.find_element("css selector", ".col-b .traj .ans").text
    d.find_element("id", "f-differ").click()
    _count_becomes(d, 2)
    assert _severe(d) == []


def test_demo_run_in_chromium_filters_by_stage(browser, tmp_path):
    d = browser
    write_eval(tmp_path / "run-001" / "eval-before", BEFORE)
    write_training_run(tmp_path / "run-001" / "train")
    write_eval(tmp_path / "run-001" / "eval-after", AFTER)
    out, _ = write_page(tmp_path / "run-001")
    assert out == tmp_path / "run-001" / "viewer.html"
    _open(d, out)
    assert _severe(d) == []
    assert d.find_element("id", "count").text == "14"
    _select(d, "f-src", "train")
    _count_becomes(d, 6)
    _select(d, "f-src", "eval-after")
    _select(d, "f-correct", "1")
    _count_becomes(d, 2)  # Velm and Mira Holt
    _select(d, "f-src", "")
    _select(d, "f-engine", "bm25")
    _count_becomes(d, 3)  # correct after a bm25 search: q1 before, q1 and q2 after (q3 never searched)
    assert _severe(d) == []


WORDS = ("the Kelvora river runs through the capital district of Velm which was founded in 1631 by Mira Holt "
         "after the long winter and became the seat of the northern council").split()


def synthetic_row(i: int) -> dict:
    """A trajectory the size of a real one (3 searches x 5 documents of 30 words: the simulator's defaults),
    built and written like the trainer's; every third answer is wrong."""
    v = Vocab()
    def docs(j: int) -> list[Document]:
        return [_doc(" ".join(WORDS[(i + j + k + w) % len(WORDS)] for w in range(30)),
                     "noisy" if (i + j) % 4 else "useful") for k in range(5)]
    answer = "Oslo" if i % 3 == 0 else "Velm"
    turns = [("search", f"<think>Step {j} of question {i}: I need the capital.</think>"
                        f"<search>Kelvora capital {j}</search>", f"Kelvora capital {j}", docs(j), "useful")
             for j in range(3)]
    t = trajectory(v, f"Question {i}: what is the capital of Kelvora?", ["Velm"],
                   turns + [("policy", f"<think>The documents say {answer}.</think><answer>{answer}</answer>")], answer)
    t.reward = float(answer == "Velm")
    return {"step": i // 2, **_sample(t), "loss_mask": loss_mask_runs(t.response_ids, t.info_mask, v.decode),
            "advantage": 0.5 if answer == "Velm" else -1.0, "group": 0}


def test_ten_thousand_trajectories_open_in_under_3_s(browser, tmp_path):
    d = browser
    with open(tmp_path / "samples.jsonl", "w", encoding="utf-8") as f:
        for i in range(10_000):
            f.write(json.dumps(synthetic_row(i)) + "\n")
    samples_mb = (tmp_path / "samples.jsonl").stat().st_size / 1e6
    t0 = time.perf_counter()
    out, runs = write_page(tmp_path, tmp_path / "big.html")
    build_s = time.perf_counter() - t0
    size_mb = out.stat().st_size / 1e6
    seconds = _open(d, out)
    render_ms = d.execute_script("return window.zsViewer.renderMs")
    print(f"\n10,000 trajectories (samples.jsonl {samples_mb:.1f} MB, page {size_mb:.1f} MB written in "
          f"{build_s:.1f} s): first render {seconds:.2f} s (browser: {render_ms:.0f} ms from navigation start)")
    assert len(runs[0].trajectories) == 10_000
    assert d.find_element("id", "count").text == "10000"
    assert len(d.find_elements("css selector", "#list .traj")) == 25
    assert _severe(d) == []
    assert seconds < 3.0
    wrong = sum(1 for i in range(10_000) if i % 3 == 0)
    t1 = time.perf_counter()
    _select(d, "f-correct", "0")
    _count_becomes(d, wrong)
    d.find_element("id", "f-text").send_keys("question 99")  # 99, 990-999, 9900-9999: 111 of them, a third wrong
    _count_becomes(d, sum(1 for i in range(10_000) if i % 3 == 0 and str(i).startswith("99")))
    print(f"filter + text search over 10,000: {time.perf_counter() - t1:.2f} s (150 ms debounce included)")
    assert _severe(d) == []
