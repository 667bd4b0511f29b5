"""``mmedrag ask`` and ``mmedrag demo`` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SPLEEN_IMAGE = "images/synpic19605.jpg"


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mmedrag", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_ask_json_returns_the_answer_with_cited_evidence(hashing_index, sample_dir) -> None:
    done = run("ask", "--index", str(hashing_index.dir), "--image", str(sample_dir / SPLEEN_IMAGE),
               "--task", "closed_vqa", "--generator", "echo", "-k", "5", "--json",
               "Is the spleen normal size?")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["parsed"] == "yes" and answer["used_rag"] and not answer["image_seen"]
    assert answer["evidence"][0]["id"] == "vqarad_synpic19605" and answer["evidence"][0]["cited"]
    assert 1 <= len(answer["evidence"]) <= 5
    assert answer["selection"]["k"] == len(answer["evidence"])
    assert answer["seconds"]["total"] > 0


def test_ask_human_output_and_no_rag(hashing_index) -> None:
    done = run("ask", "--index", str(hashing_index.dir), "-g", "echo", "--task", "mcq",
               "--option", "A=nephroblastomatosis", "--option", "B=fracture",
               "What is seen in the posterolateral kidney?")
    assert done.returncode == 0, done.stderr
    assert "parsed: A" in done.stdout and "evidence (selector:" in done.stdout
    assert "[1]*" in done.stdout and "time: route" in done.stdout
    done = run("ask", "--no-rag", "-g", "echo", "--json", "--task", "closed_vqa", "Is it normal?")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["evidence"] == [] and not answer["used_rag"]


@pytest.mark.parametrize("args,message", [
    (["ask", "Is it?"], "give --index DIR, or --no-rag"),
    (["ask", "--index", "/nonexistent-index", "Is it?"], "not an index folder"),
    (["ask", "--no-rag", "--task", "essay", "Is it?"], "unknown task 'essay'"),
    (["ask", "--no-rag", "--task", "mcq", "--option", "AB", "Q?"], "--option expects LETTER=TEXT"),
    (["ask", "--no-rag", "--generator", "ecko", "Q?"], "did you mean 'echo'"),
])
def test_ask_usage_errors_are_one_line(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_demo_json_with_the_echo_generator(tmp_path) -> None:
    done = run("demo", "--json", "--generator", "echo", "--questions", "4", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["setup"]["records"] == 36
    answers = data["answers"]
    assert len(answers) == 4 and {a["task"] for a in answers} == {"closed_vqa", "open_vqa"}
    assert len({a["image"] for a in answers}) == 4
    for item in answers:
        own = "vqarad_" + item["image"].split("/")[-1].removesuffix(".jpg")
        assert own not in [e["id"] for e in item["evidence"]]      # own record excluded
        assert item["evidence"] and any("excluded 1 record" in t for t in item["trace"])
    assert data["summary"]["questions"] == 4
    assert 0 <= data["summary"]["matches"] <= 4
    assert "evaluation harness's scorers" in data["summary"]["scorer"]
    # the harness's own verdicts: each answer's "correct" is what `eval run` would count
    from mmedrag.cli.demo import _score
    from mmedrag.records import Answer

    for item in answers:
        answer = Answer(question=item["question"], text=item["text"], parsed=item["parsed"],
                        yes_probability=item["yes_probability"])
        row = {"id": item["id"], "question": item["question"], "answer": item["reference"]}
        assert _score(answer, row, item["task"]) == item["correct"]


def test_demo_scorer_is_the_harness_scorer_not_a_substring_match() -> None:
    from mmedrag.cli.demo import _score
    from mmedrag.records import Answer

    text = ("The lesion on the left is a right subdural hematoma, while the lesion on the right "
            "is a right subdural hematoma")
    row = {"id": "q", "question": "Which side?", "answer": "Right"}
    # the reference word appears in the first sentence, but the harness's open-VQA rule is
    # exact match or full token recall of the reference: "right" is recalled here
    assert _score(Answer(question="Which side?", text=text, parsed=text), row, "open_vqa")
    wrong = Answer(question="Which side?", text="Left.", parsed="Left")
    assert not _score(wrong, row, "open_vqa")
    closed = {"id": "q", "question": "Is it?", "answer": "Yes"}
    assert _score(Answer(question="Is it?", text="yes", parsed="yes"), closed, "closed_vqa")
    assert not _score(Answer(question="Is it?", text="", parsed=None), closed, "closed_vqa")


@pytest.mark.slow
def test_demo_with_the_default_offline_model(tmp_path) -> None:
    pytest.importorskip("llama_cpp")
    done = run("demo", "--out", str(tmp_path), timeout=900)
    assert done.returncode == 0, done.stderr
    assert "SmolLM2" in done.stdout and "answers match the reference" in done.stdout
    assert done.stdout.count("time: route") == 6
