"""SFT (transformers Trainer) and the policy cold start, on tiny-random."""

from __future__ import annotations

import json

import pytest

from zerosearch.cli import main
from zerosearch.data.qa import QARecord
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.models import load
from zerosearch.training.sft import IGNORE, SFTConfig, encode_example, read_examples, sft
from zerosearch.training.warmup import ColdStartMix, demonstrations


class OneDocEngine(SearchEngine):
    name = "onedoc"

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        return [[Document(title="Kelvora", text="Kelvora lies on the Orvel River.", source="onedoc")]
                for _ in requests]


@pytest.fixture(scope="module")
def tok():
    return load("tiny-random")[1]


def test_only_flagged_segments_get_loss(tok):
    ex = {"prompt": "Q?", "segments": [["<search> q </search>", True], ["<information>docs</information>", False],
                                       ["<answer> A </answer>", True]]}
    enc = encode_example(ex, tok, max_len=512)
    trained = tok.decode([i for i, l in zip(enc["input_ids"], enc["labels"]) if l != IGNORE])
    assert trained == "<search> q </search><answer> A </answer>"
    assert len(enc["input_ids"]) == len(enc["labels"])
    assert encode_example(ex, tok, max_len=512, eos=True)["labels"][-1] == tok.eos_token_id


def test_verbatim_demonstrations_answer_only_from_retrieved_documents():
    recs = [QARecord("a", "Which river flows through Kelvora?", ["Orvel River"], "w"),
            QARecord("b", "Who founded Kelvora?", ["Varnel Odrasi"], "w")]
    demos, report = demonstrations(recs, OneDocEngine(), examples=2, mix=ColdStartMix(two_hop=0, recovery=0, verbatim=1), k=1)
    assert report["verbatim"]["dropped"] == {"answer not retrieved": 1} and [d["id"] for d in demos] == ["a"]
    texts = [s[0] for s in demos[0]["segments"]]
    assert texts[0].endswith("<search> Which river flows through Kelvora? </search>")
    assert "Doc 1(Title: Kelvora)" in texts[1] and demos[0]["segments"][1][1] is False
    assert texts[2].endswith("<answer> Orvel River </answer>")


def test_sft_lowers_the_loss_and_writes_a_loadable_model(tmp_path):
    ex = {"prompt": "Say the word.", "segments": [["<answer> Orvel River </answer>", True]]}
    summary = sft("tiny-random", [ex] * 8, tmp_path / "out", SFTConfig(lr=3e-3, steps=12, batch_size=4, warmup_steps=0),
                  progress=False)
    assert summary["last_loss"] < summary["first_loss"] * 0.7
    model, _ = load(str(tmp_path / "out" / "final"))
    assert (tmp_path / "out" / "loss.png").is_file()
    with pytest.raises(ValueError, match="already holds"):
        sft("tiny-random", [ex], tmp_path / "out", SFTConfig(steps=1), progress=False)


def test_bad_examples_name_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "segments": [["y", True]]}) + "\n" +
                   json.dumps({"prompt": "x", "segments": [["y", "yes"]]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'segments'"):
        read_examples(bad)


def test_warmup_cli_end_to_end(tmp_path):
    code = main(["warmup", "--model", "tiny-random", "--engine", "bm25", "--corpus", "world", "--world-dir",
                 str(tmp_path / "world"), "--examples", "8", "--steps", "2", "--batch-size", "4",
                 "--out", str(tmp_path / "wu")])
    assert code == 0
    demos = [json.loads(line) for line in (tmp_path / "wu" / "demos.jsonl").read_text().splitlines()]
    assert len(demos) == 8 and {d["kind"] for d in demos} >= {"two_hop", "reformulated"}
    report = json.loads((tmp_path / "wu" / "demos-report.json").read_text())
    assert report["two_hop"] == {"target": 4, "kept": 4, "dropped": report["two_hop"]["dropped"]}
    load(str(tmp_path / "wu" / "final"))


def test_head_only_loss_equals_the_full_logits_loss(tok):
    import torch

    from zerosearch.training.sft import _Collator, head_only_loss

    model, _ = load("tiny-random")
    ex = {"prompt": "Q?", "segments": [["<search> q </search>", True], ["<information>some docs</information>", False],
                                       ["<answer> A </answer>", True]]}
    rows = [encode_example(ex, tok, max_len=512), encode_example({**ex, "prompt": "A longer question here?"}, tok, 512)]
    batch = _Collator(tok.pad_token_id)(rows)
    full = model(**batch).loss
    mine = head_only_loss(model, batch)
    assert mine is not None and torch.allclose(mine, full, atol=1e-5)
    n = int((batch["labels"][:, 1:] != IGNORE).sum())
    assert torch.allclose(head_only_loss(model, batch, num_items=2 * n), full / 2, atol=1e-5)
    mine.backward()  # differentiable through the kept rows
    assert next(model.parameters()).grad is not None
