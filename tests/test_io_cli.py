import json
import subprocess
import sys

import pytest

from zerosearch.cli import COMMANDS, main
from zerosearch.io import append_jsonl, atomic_path, atomic_write_jsonl, atomic_write_text, read_jsonl, truncate_jsonl


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    p = tmp_path / "m.txt"
    atomic_write_text(p, "good")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert p.read_text() == "good"
    assert [x.name for x in tmp_path.iterdir()] == ["m.txt"]  # no temp file left behind


def test_atomic_dir_replaces_whole_directory(tmp_path):
    d = tmp_path / "ckpt"
    with atomic_path(d, is_dir=True) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_path(d, is_dir=True) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError
    assert (d / "a").read_text() == "1"
    with atomic_path(d, is_dir=True) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(x.name for x in d.iterdir()) == ["b"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ckpt"]


def test_jsonl_roundtrip_and_partial_tail(tmp_path):
    p = tmp_path / "r.jsonl"
    assert atomic_write_jsonl(p, [{"a": 1}, {"b": "é"}]) == 2
    append_jsonl(p, {"c": 3})
    assert read_jsonl(p) == [{"a": 1}, {"b": "é"}, {"c": 3}]
    with open(p, "a") as f:
        f.write('{"d": ')  # a crash in the middle of an append
    with pytest.raises(ValueError, match=r"r\.jsonl:4: invalid JSON"):
        read_jsonl(p)
    assert read_jsonl(p, tolerate_partial_tail=True) == [{"a": 1}, {"b": "é"}, {"c": 3}]


def test_cli_help_lists_commands_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("zerosearch ")


def test_import_is_light():
    # `import zerosearch` (and the CLI parser) must not pull in torch/transformers.
    code = ("import sys, zerosearch, zerosearch.cli, zerosearch.data.qa, zerosearch.reward, zerosearch.prompts; "
            "zerosearch.cli.build_parser(); "
            "print(json.dumps([m for m in ('torch', 'transformers') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_truncate_jsonl_keeps_accepted_rows_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "log.jsonl"
    assert truncate_jsonl(path) == []
    for step in (1, 2, 3):
        append_jsonl(path, {"step": step})
    before = path.stat().st_mtime_ns
    assert truncate_jsonl(path) == [{"step": 1}, {"step": 2}, {"step": 3}]
    assert path.stat().st_mtime_ns == before  # nothing to drop: the file is left alone
    with open(path, "a") as f:
        f.write('{"step": 4, "rew')  # an append cut short by a crash
    assert truncate_jsonl(path, keep=lambda r: r["step"] <= 2) == [{"step": 1}, {"step": 2}]
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    append_jsonl(path, {"step": 3})
    assert read_jsonl(path)[-1] == {"step": 3}
