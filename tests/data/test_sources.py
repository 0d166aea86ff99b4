"""The real source loaders against the real files in ../shared/data, plus hand-made files and hub rows.

Counts come from shared/data/SOURCES.md; hub rows are hand-written in the shape the hub serves.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter

import pytest

from metasft.data.cot import lacks_worked_solution
from metasft.eval.scoring import step_correctness
from metasft.data.records import ANSWER_TYPES, DOMAINS, DataError
from metasft.data.sources import (
    SOURCE_MODULES, aime, amps, champ, geometry3k, gsm8k, load_source, math, mmlu_stem, scienceqa, theoremqa,
)
from metasft.data.sources._files import hub_rows, snake

NUMBER = re.compile(r"-?\d+(\.\d+)?")


def check_records(records):
    """Properties every loader guarantees."""
    assert len({r.id for r in records}) == len(records), "ids must be unique"
    for r in records:
        assert r.domain in DOMAINS and r.answer_type in ANSWER_TYPES
        assert r.subject == snake(r.subject), r.subject
        assert r.problem.strip() and r.solution.strip() and r.answer.strip()


# --- helpers -----------------------------------------------------------------------------------

def test_snake():
    assert snake("Counting & Probability") == "counting_and_probability"
    assert snake("units-and-measurement") == "units_and_measurement"
    assert snake("Number-Theory") == "number_theory"


# --- MATH ----------------------------------------------------------------------------------------

def test_math_train_counts_levels_and_answers(shared_data, caplog):
    caplog.set_level(logging.INFO)
    records = math.load("train", shared_data)
    check_records(records)
    # SOURCES.md per-subject counts; two number-theory solutions end in an empty \boxed{}
    assert Counter(r.subject for r in records) == {
        "algebra": 1744, "counting_and_probability": 771, "geometry": 870, "intermediate_algebra": 1295,
        "number_theory": 869 - 2, "prealgebra": 1205, "precalculus": 746}
    assert "skipped 2 row(s)" in caplog.text
    assert {r.id for r in records if r.level is None} >= {"math/train/geometry/377.json"}  # "Level ?"
    assert sum(r.level is None for r in records) == 2
    assert {r.domain for r in records} == {"algebra", "geometry", "number_theory", "combinatorics", "calculus"}
    assert all(r.source == "math" and r.answer_type == "math" for r in records)


def test_math_answers_agree_with_math500(shared_data):
    test = {r.id: r for r in math.load("test", shared_data)}
    m500 = math.load("math500", shared_data)
    assert len(test) == 5000 and len(m500) == 500
    raw = {}
    for line in (shared_data / "math" / "math500_test.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        raw[f"math/{row['unique_id']}"] = row["answer"]
    for r in m500:
        assert r.id in test, r.id
        assert test[r.id].answer == raw[r.id] == r.answer
        assert test[r.id].level == r.level and test[r.id].subject == r.subject


def test_math_hub_rows():
    hub = {"problem": "What is $1+1$?", "level": "Level 2", "type": "Counting & Probability",
           "solution": "We add: $\\boxed{2}$.", "unique_id": "train/counting_and_probability/hub0"}
    r = math.row_to_record(hub, "hub row 0")
    assert (r.answer, r.level, r.subject, r.domain) == ("2", 2, "counting_and_probability", "combinatorics")
    h4 = {"problem": "p", "solution": "so $\\boxed{\\pi}$", "answer": "\\pi", "subject": "Precalculus",
          "level": 4, "unique_id": "test/precalculus/1.json"}
    assert math.row_to_record(h4, "MATH-500 row").answer == "\\pi"
    with pytest.raises(DataError, match="differs"):
        math.row_to_record({**h4, "answer": "3"}, "MATH-500 row")


def test_math_hub_path_reads_every_subject_config(monkeypatch):
    calls = []

    def fake_hub_rows(dataset_id, config, split):
        calls.append((dataset_id, config, split))
        return [{"problem": "p", "level": "Level 1", "type": "Geometry", "solution": "$\\boxed{3}$"}]

    monkeypatch.setattr(math, "hub_rows", fake_hub_rows)
    records = math.load("test")
    assert calls == [("EleutherAI/hendrycks_math", s, "test") for s in math.SUBJECTS]
    assert len(records) == 7 and records[0].id == "math/test/algebra/hub0"


# --- GSM8K ---------------------------------------------------------------------------------------

def test_gsm8k(shared_data):
    train, test = gsm8k.load("train", shared_data), gsm8k.load("test", shared_data)
    assert (len(train), len(test)) == (7473, 1319)
    for r in train + test:
        assert NUMBER.fullmatch(r.answer), r.answer
        assert "<<" not in r.solution and ">>" not in r.solution and "####" not in r.solution
    check_records(train)
    first = train[0]
    assert first.id == "gsm8k/train/0" and first.answer == "72"
    assert first.solution == ("Natalia sold 48/2 = 24 clips in May.\n"
                              "Natalia sold 48+24 = 72 clips altogether in April and May.")
    assert first.steps == ("48/2=24", "48+24=72")  # the calculator marks <<48/2=24>> <<48+24=72>>
    assert sum(bool(r.steps) for r in test) / len(test) > 0.9  # a few solutions carry no calculator mark


def test_gsm8k_steps_are_what_step_correctness_checks():
    """The marks' equations become steps; an output stating the first result and not the second scores 1/2."""
    row = {"question": "q", "answer": "She sells 16 - 3 - 4 = <<16 - 3-4=9>>9 eggs.\n"
                                      "She makes 9 * 2 = $<<9*2=18>>18.\nThe ratio is <<3/4>>.\n#### 18"}
    r = gsm8k.row_to_record(row, "test", 0, "row 0")
    assert r.steps == ("16-3-4=9", "9*2=18")  # white space dropped; a mark without '=' is no result
    assert r.solution == "She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\nThe ratio is .", r.solution
    assert step_correctness("16-3-4 = 9 eggs, so she makes 9 * 2 = 20 dollars.", r.steps) == 0.5


def test_gsm8k_hub_row_and_thousands():
    row = {"question": "How much?", "answer": "It costs 1,000+250 = <<1000+250=1250>>1,250 dollars.\n#### 1,250"}
    r = gsm8k.row_to_record(row, "test", 3, "hub row 3")
    assert (r.id, r.answer, r.solution) == ("gsm8k/test/3", "1250", "It costs 1,000+250 = 1,250 dollars.")
    with pytest.raises(DataError, match="####"):
        gsm8k.row_to_record({"question": "q", "answer": "no final line"}, "train", 0, "x.jsonl:1")


def test_gsm8k_hub_path(monkeypatch):
    monkeypatch.setattr(gsm8k, "hub_rows", lambda d, c, s: [{"question": "q", "answer": "1+1=2\n#### 2"}]
                        if (d, c, s) == ("openai/gsm8k", "main", "train") else pytest.fail(f"{d} {c} {s}"))
    assert [r.answer for r in gsm8k.load("train")] == ["2"]


# --- ScienceQA -----------------------------------------------------------------------------------

def test_scienceqa_subset_text_only(shared_data, caplog):
    caplog.set_level(logging.INFO)
    by_split = {s: scienceqa.load(s, shared_data) for s in scienceqa.SPLITS}
    assert {s: len(rs) for s, rs in by_split.items()} == {"train": 28, "val": 29, "test": 26}  # 83 text-only
    assert "problems_subset150.json" in caplog.text and "needs an image" in caplog.text
    records = [r for rs in by_split.values() for r in rs]
    check_records(records)
    for r in records:
        assert r.answer_type == "choice" and 2 <= len(r.choices) <= 5
    assert {"physics", "chemistry"} <= {r.subject for r in records}
    assert {r.domain for r in records if r.subject == "physics"} == {"physics"}
    hinted = [r for r in records if "\nContext: " in r.problem]
    assert hinted, "questions with a hint carry it as context"


def test_scienceqa_hub_rows():
    row = {"image": None, "question": "Which is a chemical change?", "choices": ["melting ice", "burning wood"],
           "answer": 1, "hint": "", "task": "closed choice", "grade": "grade5", "subject": "natural science",
           "topic": "chemistry", "category": "Physical and chemical change", "skill": "s", "lecture": "l",
           "solution": ""}
    r = scienceqa.row_to_record(row, "hub-train-0", "hub row 0")
    assert (r.id, r.answer, r.domain, r.subject, r.choices) == (
        "scienceqa/hub-train-0", "B", "chemistry", "chemistry", ("melting ice", "burning wood"))
    assert r.solution == "The answer is (B) burning wood." and lacks_worked_solution(r)
    assert scienceqa.row_to_record({**row, "image": object()}, "x", "hub row 1") is None
    with pytest.raises(DataError, match="answer index"):
        scienceqa.row_to_record({**row, "answer": 2}, "x", "hub row 2")


# --- TheoremQA -----------------------------------------------------------------------------------

def test_theoremqa(shared_data, caplog):
    caplog.set_level(logging.INFO)
    records = theoremqa.load("test", shared_data)
    check_records(records)
    assert len(records) == 800 - 53 and "skipped 53 row(s): question needs a picture" in caplog.text
    assert Counter(r.answer_type for r in records) == {"float": 360, "integer": 200, "bool": 112, "list": 59, "choice": 16}
    for r in records:
        if r.answer_type == "integer":
            int(r.answer)
        elif r.answer_type == "float":
            float(r.answer)
        elif r.answer_type == "bool":
            assert r.answer in ("True", "False")
        elif r.answer_type == "list":
            assert isinstance(json.loads(r.answer), list)
        else:
            assert len(r.choices) >= 2 and "(a)" not in r.problem
        assert lacks_worked_solution(r) and r.topic  # no published explanations; topic is the theorem
    assert {"computer_science", "physics", "finance", "calculus"} <= {r.domain for r in records}


def test_theoremqa_options_and_hub_row():
    stem, choices = theoremqa.split_options(
        "What is the Fisher information? (a) $\\theta$. (b) $2\\theta$. (c) $0.5\\theta^{-1}$. Which option is correct?")
    assert stem == "What is the Fisher information?" and choices == ("$\\theta$", "$2\\theta$", "$0.5\\theta^{-1}$")
    stem, choices = theoremqa.split_options("Given colors: (a) $(pi, 0.3)$, (b) $(0.5 pi, 0.8)$, which is brighter?")
    assert stem == "Given colors: which is brighter?" and choices == ("$(pi, 0.3)$", "$(0.5 pi, 0.8)$")
    assert theoremqa.split_options("Compute f(a) for a = 2.") is None
    hub = {"Question": "Is 7 prime?", "Answer": "True", "Answer_type": "bool", "Picture": None, "id": "hub0"}
    r = theoremqa.row_to_record(hub, "hub row 0", Counter())
    assert (r.id, r.answer, r.answer_type, r.subject, r.domain) == ("theoremqa/hub0", "True", "bool", "theorem", "mixed")
    skipped = Counter()
    assert theoremqa.row_to_record({**hub, "Picture": "x.png"}, "hub row 1", skipped) is None
    assert skipped == {theoremqa.SKIP_PICTURE: 1}
    assert theoremqa.format_answer([1, 2.5]) == "[1, 2.5]" and theoremqa.format_answer(False) == "False"


# --- MMLU-STEM -----------------------------------------------------------------------------------

def test_mmlu_stem(shared_data):
    counts = {s: len(mmlu_stem.load(s, shared_data)) for s in mmlu_stem.SPLITS}
    assert counts == {"test": 3015, "dev": 90, "val": 328, "final_test": 3018}
    final = mmlu_stem.load("final_test", shared_data)
    check_records(final)
    per_subject = Counter(r.subject for r in final)
    assert set(per_subject) == set(mmlu_stem.SUBJECTS)
    changed = ("high_school_chemistry", "high_school_physics", "machine_learning")
    assert [per_subject[s] for s in changed] == [203, 151, 112]  # the final release, not the CSVs' 204/154/105
    for r in final + mmlu_stem.load("test", shared_data):
        assert r.answer in "ABCD" and len(r.answer) == 1 and len(r.choices) == 4
        assert r.solution == f"The answer is ({r.answer}) {r.choices['ABCD'.index(r.answer)]}."
    first = mmlu_stem.load("test", shared_data)[0]
    assert (first.id, first.answer, first.choices) == ("mmlu_stem/test/abstract_algebra/0", "B", ("0", "4", "2", "6"))


def test_mmlu_hub_row_and_path(monkeypatch):
    r = mmlu_stem.make_record("2+2?", ["3", "4", "5", "6"], 1, "college_physics", "val", 0, "hub row 0")
    assert (r.answer, r.domain) == ("B", "physics")
    with pytest.raises(DataError, match="A-D"):
        mmlu_stem.make_record("q", ["1", "2", "3", "4"], "E", "astronomy", "test", 0, "f.csv:3")
    seen = []
    monkeypatch.setattr(mmlu_stem, "hub_rows", lambda d, c, s: seen.append((d, c, s)) or
                        [{"question": "q", "subject": c, "choices": ["a", "b", "c", "d"], "answer": 3}])
    assert {r.answer for r in mmlu_stem.load("val")} == {"D"}
    assert seen[0] == ("cais/mmlu", "abstract_algebra", "validation") and len(seen) == 18


# --- AIME ----------------------------------------------------------------------------------------

def test_aime(shared_data, caplog):
    caplog.set_level(logging.INFO)
    train, everything, a24 = (aime.load(s, shared_data) for s in aime.SPLITS)
    assert (len(train), len(everything), len(a24)) == (933 - 14 - 15 - 1, 933 - 15 - 1, 30)
    assert "refers to a figure file" in caplog.text and "not a single integer" in caplog.text
    for r in train + everything + a24:
        assert r.answer.isdigit() and str(int(r.answer)) == r.answer and 0 <= int(r.answer) <= 999
        assert r.answer_type == "integer"
    check_records(everything)
    assert all(int(r.id.split("/")[1][:4]) <= 2023 for r in train)
    assert all(lacks_worked_solution(r) for r in everything) and not any(lacks_worked_solution(r) for r in a24)
    assert a24[0].id == "aime/2024-I-1" and a24[0].answer == "204"
    # the 14 AIME 2024 problems of the CSV agree with the 2024 file
    by_id = {r.id: r.answer for r in a24}
    overlap = [r for r in everything if r.id in by_id]
    assert len(overlap) == 14 and all(by_id[r.id] == r.answer for r in overlap)


def test_aime_hub_rows():
    row = {"ID": "2000-I-3", "Year": 2000, "Problem Number": 3, "Question": "Find n.", "Answer": 25, "Part": "I"}
    r = aime.csv_row_to_record(row, "hub row 0", Counter())
    assert (r.id, r.answer, r.solution) == ("aime/2000-I-3", "25", "The answer is 25.")
    r = aime.aime24_row_to_record({"ID": "2024-II-4", "Problem": "p", "Solution": "s", "Answer": 33}, "hub row 1")
    assert (r.id, r.answer, r.solution) == ("aime/2024-II-4", "33", "s")
    skipped = Counter()
    assert aime.csv_row_to_record({**row, "Answer": "080 or 081"}, "x", skipped) is None
    assert skipped == {aime.SKIP_ANSWER: 1}


# --- CHAMP ---------------------------------------------------------------------------------------

@pytest.mark.floors
def test_champ():
    records = champ.load("all")
    check_records(records)
    assert len(records) == 270
    assert Counter(r.topic for r in records) == {"number_theory": 80, "inequality": 50, "polynomial": 50,
                                                 "sequence": 50, "combinatorics": 40}
    first = next(r for r in records if r.id == "champ/P_Combinatorics_1")
    assert first.answer == "239" and first.solution.count("\n") == 5 and "@@" not in first.problem


# --- Geometry3K and AMPS (written in tmp_path in their published layouts) ------------------------

def write_geometry3k(root, split, problems):
    for pid, answer in problems:
        folder = root / "geometry3k" / split / str(pid)
        folder.mkdir(parents=True)
        (folder / "data.json").write_text(json.dumps({
            "id": pid, "problem_text": f"Find x. ({pid})", "choices": ["3", "4", "6", "8"], "answer": answer,
            "problem_type_graph": ["Triangle"], "problem_type_goal": ["Length"]}))
        (folder / "img_diagram.png").write_bytes(b"")


def test_geometry3k(tmp_path):
    write_geometry3k(tmp_path, "train", [(10, "C"), (2, "A")])
    records = geometry3k.load("train", tmp_path)
    assert [r.id for r in records] == ["geometry3k/train/2", "geometry3k/train/10"]
    assert (records[1].answer, records[1].choices[2], records[1].topic) == ("C", "6", "Length")
    assert lacks_worked_solution(records[1])
    write_geometry3k(tmp_path, "test", [(5, "E")])
    with pytest.raises(DataError, match=r"test/5/data\.json.*'E'"):
        geometry3k.load("test", tmp_path)
    with pytest.raises(DataError, match="directory not found"):
        geometry3k.load("val", tmp_path)
    with pytest.raises(DataError, match="no Hugging Face copy"):
        geometry3k.load("train")


def test_amps(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    khan = tmp_path / "amps" / "khan" / "Linear equations"
    khan.mkdir(parents=True)
    (khan / "1.json").write_text(json.dumps({"problem": "Solve $2x = 6$.", "hints": ["Divide by 2.", "$x = 3$"]}))
    (khan / "2.json").write_text(json.dumps({"problem": "Simplify $4/2$.", "hints": ["So $\\boxed{2}$."]}))
    (khan / "3.json").write_text(json.dumps({"problem": "Draw it.", "hints": ["Look at the graph."]}))
    mathematica = tmp_path / "amps" / "mathematica" / "Calculus" / "deriv"
    mathematica.mkdir(parents=True)
    (mathematica / "1.txt").write_text("Problem:\nDifferentiate $x^2$.\nAnswer:\n$2 x$\n")
    records = amps.load("train", tmp_path)
    assert [(r.id, r.answer, r.subject) for r in records] == [
        ("amps/khan/Linear equations/1", "3", "linear_equations"),
        ("amps/khan/Linear equations/2", "2", "linear_equations"),
        ("amps/mathematica/Calculus/deriv/1", "$2 x$", "calculus")]
    assert records[0].solution == "Divide by 2.\n$x = 3$" and lacks_worked_solution(records[2])
    assert "skipped 1 row(s): no answer found" in caplog.text
    assert len(amps.load("khan", tmp_path)) == 2
    with pytest.raises(DataError, match="not on the Hugging Face hub"):
        amps.load("train")
    with pytest.raises(DataError, match="no khan folder"):
        amps.load("khan", tmp_path / "elsewhere")


# --- errors ----------------------------------------------------------------------------------------

def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "math" / "train.jsonl"
    path.parent.mkdir()
    good = {"problem": "p", "level": "Level 1", "type": "Algebra", "solution": "$\\boxed{1}$", "unique_id": "a"}
    path.write_text(json.dumps(good) + "\n" + '{"problem": "broken\n')
    with pytest.raises(DataError, match=r"train\.jsonl:2: malformed JSON"):
        math.load("train", tmp_path)


def test_empty_problem_names_file_and_line(tmp_path):
    path = tmp_path / "gsm8k" / "test.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"question": "ok?", "answer": "One.\n#### 1"}) + "\n\n"
                    + json.dumps({"question": "  ", "answer": "Two.\n#### 2"}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl:3 .*'problem' must be a non-empty string"):
        gsm8k.load("test", tmp_path)


def test_bad_csv_row_names_file_and_line(tmp_path):
    folder = tmp_path / "mmlu_stem" / "dev"
    folder.mkdir(parents=True)
    for subject in mmlu_stem.SUBJECTS:
        (folder / f"{subject}_dev.csv").write_text('"multi\nline question",a,b,c,d,A\nq,a,b,c,d,B\n')
    (folder / "astronomy_dev.csv").write_text('"multi\nline question",a,b,c,d,A\nq,a,b,c,B\n')
    with pytest.raises(DataError, match=r"astronomy_dev\.csv:3: expected 6 fields, got 5"):
        mmlu_stem.load("dev", tmp_path)


def test_missing_file_and_unknown_split(tmp_path):
    with pytest.raises(DataError, match=r"gsm8k/train\.jsonl: file not found; expected GSM8K JSONL"):
        gsm8k.load("train", tmp_path)
    with pytest.raises(DataError, match=r"theoremqa_test\.json: file not found"):
        theoremqa.load("test", tmp_path)
    with pytest.raises(DataError, match=r"unknown split 'validation'.*\['train', 'test', 'math500'\]"):
        math.load("validation", tmp_path)
    with pytest.raises(DataError, match=r"unknown split 'train'.*\['all'\]"):
        load_source("champ", "train")


@pytest.mark.floors
def test_hub_rows_go_through_datasets(tmp_path, monkeypatch):
    """`hub_rows` is `datasets.load_dataset(id, config, split=...)` as plain dicts; a local folder
    stands in for the hub (tests have no network)."""
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # not the user's cache
    rows = [{"question": "What is 1+1?", "answer": "#### 2"}, {"question": "What is 2+3?", "answer": "#### 5"}]
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert hub_rows(str(tmp_path / "hub"), None, "test") == rows


def test_hub_failure_is_a_data_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"'openai/gsm8k'.*hub unreachable"):
        gsm8k.load("test")
    # through load_source, the one line also says how to read local files instead
    with pytest.raises(DataError, match=r"source 'gsm8k' \(split 'test'\) did not load on the Hugging Face hub: "
                                        r".*hub unreachable.*data\.roots\.gsm8k=DIR \(or data_root=DIR\) with "
                                        r"gsm8k/\{train,test\}\.jsonl under DIR"):
        load_source("gsm8k", "test")


def test_every_registered_source_loads_through_load_source(shared_data):
    first_split = {"math": "train", "gsm8k": "train", "scienceqa": "train", "theoremqa": "test",
                   "mmlu_stem": "dev", "aime": "aime24", "champ": "all"}
    for name, split in first_split.items():
        assert name in SOURCE_MODULES
        records = load_source(name, split, shared_data)
        assert records and all(r.source == name for r in records)
