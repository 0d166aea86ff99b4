"""Your own data (data.sources, metasft.data.sources.custom): a JSONL file the test writes builds as a
meta-training task and as an eval task; CSV and parquet read the same; bad rows name file and row."""
import csv
import json

import pandas as pd
import pytest
import yaml

from metasft.cli import main
from metasft.config import Columns, ConfigError, UserSource, load_config
from metasft.data.records import DataError
from metasft.data.sources import load_source
from metasft.data.store import read_sft
from metasft.fingerprint import plan
from metasft.rundir import MANIFEST


def rows():
    """30 algebra problems (levels 1-3) and 20 geometry ones, in a user's own column names."""
    out = []
    for i in range(30):
        out.append({"qid": f"a{i}", "question": f"Solve {i} + x = {2 * i + 3} for x.",
                    "worked": f"Subtract {i} from both sides: x = {i + 3}.", "final": str(i + 3),
                    "topic": "Algebra", "difficulty": f"Level {1 + i % 3}"})
    for i in range(20):
        out.append({"qid": f"g{i}", "question": f"A square has side {i + 1}. What is its area?",
                    "worked": f"The area is {i + 1} squared, $\\boxed{{{(i + 1) ** 2}}}$.", "final": str((i + 1) ** 2),
                    "topic": "Geometry", "difficulty": 2})
    return out


COLUMNS = {"problem": "question", "solution": "worked", "answer": "final", "subject": "topic",
           "level": "difficulty", "id": "qid"}


def write_jsonl(path, items):
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def write_config(tmp_path, data_file):
    config = {
        "data": {
            "val_max_samples": 2,
            "sources": [{"name": "my_problems", "path": str(data_file), "columns": COLUMNS}],
            "tasks": [{"name": "my_algebra", "source": "my_problems", "subject": "algebra"}],
            "eval_tasks": [{"name": "my_geometry", "source": "my_problems", "subject": "geometry",
                            "n_shots": [0, 4], "test_size": 8}],
        }
    }
    path = tmp_path / "mine.yaml"
    path.write_text("# metasft data build mine.yaml --out data\n" + yaml.safe_dump(config))
    return path


def test_own_jsonl_builds_as_meta_training_and_eval_task(tmp_path, capsys):
    config = write_config(tmp_path, write_jsonl(tmp_path / "mine.jsonl", rows()))
    out = tmp_path / "data"
    assert main(["data", "build", str(config), "--out", str(out)]) == 0
    assert "my_algebra" in capsys.readouterr().out
    manifest = json.loads((out / MANIFEST).read_text())
    algebra = manifest["tasks"]["my_algebra"]["splits"]
    assert sum(s["n"] for s in algebra.values()) == 30
    assert algebra["support"]["levels"] == {"1": 2, "2": 2, "3": 2}  # stratified by the mapped level
    geometry = manifest["eval_tasks"]["my_geometry"]["splits"]
    assert geometry["test"]["n"] == 8 and geometry["shots"]["n"] == 12  # one file: test and shots disjoint
    assert manifest["sources"] == {"my_problems": {"kind": "files", "root": None,
                                                   "read": [str((tmp_path / "mine.jsonl").resolve())]}}
    support = read_sft(out / "data/meta_train/my_algebra_support.parquet")
    assert support and all(r["id"].startswith("my_problems/a") for r in support)
    test = pd.read_parquet(out / "data/eval/my_geometry_test.parquet")
    assert set(test["subject"]) == {"geometry"} and set(test["source"]) == {"my_problems"}


def spec(path, **columns):
    return UserSource(name="mine", path=str(path), columns=Columns(**{**COLUMNS, **columns}))


def test_csv_and_parquet_read_like_jsonl(tmp_path):
    items = rows()
    jsonl = load_source("mine", "train", user=[spec(write_jsonl(tmp_path / "a.jsonl", items))])
    with open(tmp_path / "a.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(items[0]))
        writer.writeheader()
        writer.writerows(items)
    pd.DataFrame(items).astype({"difficulty": str}).to_parquet(tmp_path / "a.parquet")
    for name in ("a.csv", "a.parquet"):
        assert load_source("mine", "train", user=[spec(tmp_path / name)]) == jsonl, name
    assert jsonl[30].level == 2 and jsonl[0].level == 1 and jsonl[0].answer == "3"


def test_a_byte_order_mark_is_no_data(tmp_path):
    """Issue 23: Excel and Notepad start UTF-8 files with a BOM; the first column's name or the first
    JSON line then did not parse."""
    items = rows()
    expected = load_source("mine", "train", user=[spec(write_jsonl(tmp_path / "a.jsonl", items))])
    with open(tmp_path / "b.csv", "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, fieldnames=list(items[0]))
        writer.writeheader()
        writer.writerows(items)
    (tmp_path / "b.jsonl").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "a.jsonl").read_bytes())
    (tmp_path / "b.json").write_text(json.dumps(items), encoding="utf-8-sig")
    for name in ("b.csv", "b.jsonl", "b.json"):
        assert load_source("mine", "train", user=[spec(tmp_path / name)]) == expected, name


def test_split_placeholder_choices_and_boxed_answers(tmp_path):
    (tmp_path / "test.jsonl").write_text(json.dumps(
        {"q": "Which is prime?", "opts": ["4", "6", "7"], "ans": "7", "sol": "7 has no divisor."}) + "\n")
    src = UserSource(name="mc", path=str(tmp_path / "{split}.jsonl"),
                     columns=Columns(problem="q", solution="sol", answer="ans", choices="opts"))
    (record,) = load_source("mc", "test", user=[src])
    assert (record.answer, record.answer_type, record.choices, record.id) == ("C", "choice", ("4", "6", "7"), "mc/test/0")
    with pytest.raises(DataError, match=r"train\.jsonl: file not found"):
        load_source("mc", "train", user=[src])
    boxed = load_source("mine", "train", user=[spec(write_jsonl(tmp_path / "b.jsonl", rows()[30:]), answer=None)])
    assert [r.answer for r in boxed] == [str((i + 1) ** 2) for i in range(20)]


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("worked"), r"b\.jsonl:3: no column 'worked' \(columns\.solution\)"),
    (lambda r: r.update(difficulty="hard"), r"b\.jsonl:3: column 'difficulty' \(columns\.level\) must be a level 1-5"),
    (lambda r: r.update(question="  "), r"b\.jsonl:3: column 'question' \(columns\.problem\) must be non-empty"),
    (lambda r: r.update(qid="a0"), r"b\.jsonl:3: id 'mine/a0' repeats .*b\.jsonl:1"),
])
def test_a_bad_row_is_one_line_naming_file_and_row(tmp_path, change, message):
    items = rows()[:5]
    change(items[2])
    with pytest.raises(DataError, match=message) as e:
        load_source("mine", "train", user=[spec(write_jsonl(tmp_path / "b.jsonl", items))])
    assert "\n" not in str(e.value)


def test_cli_error_for_a_bad_row_is_one_line(tmp_path, capsys):
    items = rows()
    items[4]["difficulty"] = 9
    config = write_config(tmp_path, write_jsonl(tmp_path / "mine.jsonl", items))
    assert main(["data", "build", str(config), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "mine.jsonl:5" in err and "columns.level" in err


def test_config_checks_sources(tmp_path):
    config = write_config(tmp_path, tmp_path / "mine.jsonl")
    with pytest.raises(ConfigError, match=r"data.tasks\[my_algebra\]: unknown source 'nope'; expected a built-in source"):
        load_config(config, ["data.tasks.0.source=nope"])
    with pytest.raises(ConfigError, match=r"give path \(a file\) or hub"):
        load_config(config, ["data.sources.0.hub=org/name"])
    with pytest.raises(ConfigError, match=r"built-in source's"):
        load_config(config, ["data.sources.0.name=math", "data.tasks.0.source=math", "data.eval_tasks.0.source=math"])


def test_editing_your_file_changes_the_data_fingerprint(tmp_path):
    data = write_jsonl(tmp_path / "mine.jsonl", rows())
    cfg = load_config(write_config(tmp_path, data))
    before = plan(cfg, [], None)["data"]
    write_jsonl(data, rows()[:-1])
    after = plan(cfg, [], None)["data"]
    assert before != after and before["data.sources.0.path"] == str(data)
    assert plan(load_config(None), [], None)["data"].keys().isdisjoint({"data.sources"})  # old digests kept


def test_more_options_than_letters_is_refused_when_read(tmp_path):
    """11 options: the letters stop at J, so the question could be neither asked nor graded (issue 23:
    it was found only at evaluation, after training)."""
    items = [{"q": f"Pick {i}", "sol": "It is A.", "ans": "A", "opts": [f"option {k}" for k in range(11)]}
             for i in range(3)]
    src = UserSource(name="mc", path=str(write_jsonl(tmp_path / "mc.jsonl", items)),
                     columns=Columns(problem="q", solution="sol", answer="ans", choices="opts"))
    with pytest.raises(DataError, match=r"mc\.jsonl:1: column 'opts' \(columns\.choices\) lists 11 options; at most 10"):
        load_source("mc", "train", user=[src])
