import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zerosearch.data.qa import DataError, ReadReport, data_hash, load_qa, read_qa, subsample, write_qa

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_flashrag_search_r1_ircot_musique_field_names(tmp_path):
    p = write_jsonl(tmp_path / "mix.jsonl", [
        {"id": "a", "question": "Q1?", "golden_answers": ["x", "y"]},
        {"question_id": "b", "question_text": "Q2?", "answers_objects": [{"spans": ["z"]}]},
        {"id": "c", "question": "Q3?", "answer": "w", "answer_aliases": ["W."]},
        {"question": "Q4?", "answers": ["v"], "data_source": "nq"},
        {"prompt": [{"role": "user", "content": "Answer the given question... Question: Q5?\n"}],
         "reward_model": {"ground_truth": {"target": ["t1", "t2"]}}, "data_source": "nq",
         "extra_info": {"index": 7, "split": "test"}},
    ])
    recs = read_qa(p)
    assert [r.question for r in recs] == ["Q1?", "Q2?", "Q3?", "Q4?", "Q5?"]
    assert [r.golden_answers for r in recs] == [["x", "y"], ["z"], ["w", "W."], ["v"], ["t1", "t2"]]
    assert recs[0].data_source == "mix" and recs[3].data_source == "nq"
    # bare per-dataset index 7 is prefixed with its source so ids stay unique across datasets
    assert recs[4].id == "nq-7"
    assert recs[4].extra["extra_info"] == {"index": 7, "split": "test"}
    assert len({r.id for r in recs}) == 5


def test_zerosearch_parquet_with_answer_split(tmp_path):
    table = pa.Table.from_pylist([
        {"data_source": "popqa", "prompt": [{"content": "What is the capital of X?", "role": "user"}],
         "reward_model": {"ground_truth": "A<|answer_split|>B", "style": "rule"},
         "extra_info": {"index": "popqa_1", "split": "dev"}},
    ])
    pq.write_table(table, tmp_path / "t.parquet")
    (r,) = read_qa(tmp_path / "t.parquet")
    assert (r.id, r.question, r.golden_answers, r.data_source) == ("popqa_1", "What is the capital of X?", ["A", "B"], "popqa")


def test_bad_rows_name_file_line_field(tmp_path):
    p = write_jsonl(tmp_path / "bad.jsonl", [{"id": "1", "question": "ok?", "answer": "x"}, {"id": "2", "answer": "y"}])
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: missing field question"):
        read_qa(p)
    p2 = write_jsonl(tmp_path / "bad2.jsonl", [{"id": "1", "question": "q?"}])
    with pytest.raises(DataError, match=r"line 1: missing field golden_answers"):
        read_qa(p2)
    p3 = write_jsonl(tmp_path / "bad3.jsonl", ['{"id": "1", "question": "q?", "answer": "a"}', "{not json"])
    with pytest.raises(DataError, match=r"line 2: invalid JSON"):
        read_qa(p3)
    p4 = write_jsonl(tmp_path / "dup.jsonl", [{"id": "1", "question": "q", "answer": "a"}] * 2)
    with pytest.raises(DataError, match=r"line 2: duplicate id 'dup-1' \(first at line 1\)"):
        read_qa(p4)


def test_skip_bad_counts(tmp_path):
    p = write_jsonl(tmp_path / "bad.jsonl", [{"id": "1", "question": "ok?", "answer": "x"}, {"id": "2"}, "[1]"])
    report = ReadReport(str(p))
    recs = read_qa(p, skip_bad=True, report=report)
    assert len(recs) == 1 and report.read == 1 and report.skipped == 2
    assert "line 2" in report.reasons[0] and "line 3: expected an object" in report.reasons[1]


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown data format"):
        read_qa(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_qa(tmp_path / "nope.jsonl")


def test_json_list_roundtrip_subsample_hash(tmp_path):
    rows = [{"id": str(i), "question": f"q{i}?", "answer": f"a{i}", "data_source": "s" + str(i % 2)} for i in range(20)]
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}))
    recs = read_qa(tmp_path / "d.json")
    assert len(recs) == 20
    write_qa(tmp_path / "out.jsonl", recs)
    again = read_qa(tmp_path / "out.jsonl")
    assert [r.to_dict() for r in again] == [r.to_dict() for r in recs]
    assert data_hash(again) == data_hash(recs)
    sub = subsample(recs, 3, seed=1)
    assert len(sub) == 6 and sub == subsample(recs, 3, seed=1)  # 3 per source, reproducible
    assert [r.id for r in sub] == sorted((r.id for r in sub), key=lambda i: [x.id for x in recs].index(i))
    assert load_qa(f"{tmp_path / 'd.json'},{tmp_path / 'out.jsonl'}", limit=2) and len(load_qa([tmp_path / "d.json"], limit=2)) == 4


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent (only in the developers' and CI checkouts)")
def test_reads_the_shared_public_files():
    mix = read_qa(SHARED / "qa_mix_test.parquet")
    assert len(mix) == 3197 and len({r.id for r in mix}) == 3197
    assert {r.data_source for r in mix} == {"nq", "tq", "popqa", "hotpotqa", "2wiki", "musique", "Bamboogle"}
    hp = read_qa(SHARED / "hotpotqa_dev500_contexts.jsonl")
    assert len(hp) == 500 and hp[0].golden_answers == ["Chief of Protocol"]
    mq = read_qa(SHARED / "musique_dev200_paragraphs.jsonl")
    assert len(mq) == 200 and all(r.golden_answers for r in mq)
