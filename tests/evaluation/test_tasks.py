"""Task registry and loaders, on small fixtures in each public format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedrag.errors import InputError, UsageError
from mmedrag.evaluation.tasks import get_task, groups, resolve_tasks
from mmedrag.evaluation.tasks import loaders as ld


def _write(path: Path, data: object, jsonl: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    else:
        path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_registry_groups_and_did_you_mean() -> None:
    assert get_task("vqa-rad-closed").kind == "closed_vqa"
    assert get_task("mirage-pubmedqa").primary == "accuracy"
    assert set(groups()["mirage"]) == {f"mirage-{d}" for d in
                                       ("mmlu", "medqa", "medmcqa", "pubmedqa", "bioasq")}
    names = [t.name for t in resolve_tasks("vqa-rad,mirage-mmlu,vqa-rad-closed")]
    assert names == ["vqa-rad-closed", "vqa-rad-open", "mirage-mmlu"]
    with pytest.raises(UsageError, match="did you mean 'vqa-rad-closed'"):
        get_task("vqa-rad-closd")
    (voc,) = resolve_tasks("mirage-medqa:mcq_voc")
    assert (voc.name, voc.kind, voc.primary) == ("mirage-medqa:mcq_voc", "mcq_voc", "accuracy")
    with pytest.raises(UsageError, match="does not fit"):
        resolve_tasks("vqa-rad-closed:report")


def test_mevf_and_shared_vqa_rad_formats(tmp_path: Path) -> None:
    mevf = _write(tmp_path / "testset.json", [
        {"qid": 1, "image_name": "synpic1.jpg", "image_organ": "CHEST", "answer": "Yes",
         "answer_type": "CLOSED", "question": "Is there an effusion?"},
        {"qid": 2, "image_name": "synpic1.jpg", "image_organ": "CHEST", "answer": "CT",
         "answer_type": "CLOSED  ", "question": "Is this CT or MRI?"},
        {"qid": 3, "image_name": "synpic2.jpg", "image_organ": "HEAD", "answer": "left",
         "answer_type": "OPEN", "question": "Which side?"}])
    closed = list(ld.vqa_samples(mevf, closed=True))
    assert [s.reference for s in closed] == ["yes", "CT"]
    assert closed[1].meta["kind"] == "open_vqa" and "kind" not in closed[0].meta
    assert closed[0].domain == "CHEST" and closed[0].image.endswith("synpic1.jpg")
    opened = list(ld.vqa_samples(mevf, closed=False))
    assert [(s.id, s.reference) for s in opened] == [("3", "left")]


def test_slake_keeps_english_and_finds_image_folder(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "xmlab1").mkdir(parents=True)
    (tmp_path / "imgs" / "xmlab1" / "source.jpg").write_bytes(b"x")
    path = _write(tmp_path / "test.json", [
        {"qid": 10, "img_name": "xmlab1/source.jpg", "question": "Is the lung healthy?",
         "answer": "No", "q_lang": "en", "answer_type": "CLOSED", "location": "Lung",
         "modality": "CT"},
        {"qid": 11, "img_name": "xmlab1/source.jpg", "question": "肺部健康吗?", "answer": "否",
         "q_lang": "zh", "answer_type": "CLOSED"}])
    samples = list(ld.vqa_samples(path, closed=True))
    assert [(s.id, s.reference, s.domain) for s in samples] == [("10", "no", "Lung")]
    assert Path(samples[0].image) == (tmp_path / "imgs" / "xmlab1" / "source.jpg").resolve()


def test_pathvqa_and_mmed_rag_rule_jsonl(tmp_path: Path) -> None:
    pathvqa = _write(tmp_path / "pathvqa.json", [
        {"image": "train_0001.jpg", "question": "Is this a carcinoma?", "answer": "yes"},
        {"image": "train_0002.jpg", "question": "What is shown?", "answer": "fibrosis"}])
    assert [s.reference for s in ld.vqa_samples(pathvqa, closed=True)] == ["yes"]
    rule = _write(tmp_path / "rule_test.jsonl", [
        {"question_id": "q1", "image": ["study/1.png"], "text": "Is there cardiomegaly?",
         "gt_ans": "No"}], jsonl=True)
    (sample,) = ld.vqa_samples(rule, closed=None)
    assert (sample.id, sample.question, sample.reference) == ("q1", "Is there cardiomegaly?", "no")
    assert sample.image.endswith("study/1.png")


def test_vqa_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.jsonl", [{"id": "1", "question": "Is it?"}], jsonl=True)
    with pytest.raises(InputError) as info:
        list(ld.vqa_samples(bad))
    assert "bad.jsonl" in str(info.value) and "answer" in str(info.value)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": 1, "question": "q?", "answer": "yes"}\n{oops\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"broken.jsonl:2.*malformed JSON"):
        list(ld.vqa_samples(broken))


def test_r2gen_annotation(tmp_path: Path) -> None:
    ann = _write(tmp_path / "annotation.json", {
        "train": [], "val": [],
        "test": [{"id": "CXR1_1_IM-0001", "report": "The heart is normal in size.",
                  "image_path": ["CXR1_1_IM-0001/0.png", "CXR1_1_IM-0001/1.png"],
                  "split": "test"}]})
    (sample,) = ld.r2gen_samples(ann)
    assert sample.reference == "The heart is normal in size."
    assert sample.image == str((tmp_path / "images" / "CXR1_1_IM-0001" / "0.png").resolve())
    with pytest.raises(InputError, match="'test'"):
        list(ld.r2gen_samples(_write(tmp_path / "a2.json", {"train": []})))


def test_mirage_and_medagentsbench(tmp_path: Path) -> None:
    mirage = _write(tmp_path / "benchmark.json", {
        "pubmedqa": {"123": {"question": "Does X help?", "options": {"A": "yes", "B": "no",
                                                                     "C": "maybe"},
                             "answer": "A", "PMID": [123]}},
        "mmlu": {"anatomy-000": {"question": "Q?", "options": {"A": "a", "B": "b"},
                                 "answer": "B"}}})
    (pub,) = ld.mirage_samples(mirage, "pubmedqa")
    assert pub.reference == "A" and pub.exclude_ids == {"pubmed123"}
    (mm,) = ld.mirage_samples(mirage, "mmlu")
    assert mm.meta["subject"] == "anatomy"
    with pytest.raises(InputError, match="medqa"):
        list(ld.mirage_samples(mirage, "medqa"))
    agents = _write(tmp_path / "medqa_hard.jsonl", [
        {"realidx": "7", "question": "Which drug?", "options": {"A": "x", "B": "y"},
         "answer_idx": "B", "answer": "y"},
        {"realidx": "8", "question": "Which?", "options": {"A": "x", "B": "y"}, "answer": "x"}],
        jsonl=True)
    assert [(s.id, s.reference) for s in ld.medagents_samples(agents)] == [("7", "B"), ("8", "A")]


def test_pubmedqa_bioasq_medquad(tmp_path: Path) -> None:
    folder = tmp_path / "pubmedqa"
    _write(folder / "ori_pqal.json", {"1": {"QUESTION": "Q1?", "CONTEXTS": ["a"]},
                                      "2": {"QUESTION": "Q2?", "CONTEXTS": ["b"]}})
    _write(folder / "test_ground_truth.json", {"2": "maybe"})
    (sample,) = ld.pubmedqa_samples(folder)
    assert (sample.id, sample.reference, sample.exclude_ids) == ("2", "C", {"pubmed2"})
    bio = _write(tmp_path / "q.jsonl", [{"id": "b1", "question": "Is it?", "type": "yesno",
                                         "exact_answer": "Yes"}], jsonl=True)
    assert [s.reference for s in ld.bioasq_samples(bio)] == ["yes"]
    mq = _write(tmp_path / "qa.jsonl", [{"id": "GHR_1", "source": "GHR", "question": "What?",
                                         "answer": "An answer."}], jsonl=True)
    assert [s.domain for s in ld.medquad_samples(mq)] == ["GHR"]


def test_load_limit_seed_prefix_and_duplicates(tmp_path: Path) -> None:
    rows = [{"id": str(i), "image": "x.jpg", "question": f"q{i}?", "answer": "yes"}
            for i in range(30)]
    path = _write(tmp_path / "v.jsonl", rows, jsonl=True)
    (task,) = resolve_tasks(f"vqa-closed={path}")
    ten = [s.id for s in task.load(limit=10, seed=3)]
    twenty = [s.id for s in task.load(limit=20, seed=3)]
    assert twenty[:10] == ten and ten != [str(i) for i in range(10)]
    dup = _write(tmp_path / "d.jsonl", rows[:2] + rows[:1], jsonl=True)
    with pytest.raises(UsageError, match="duplicate"):
        resolve_tasks(f"vqa-closed={dup}")[0].load()


@pytest.mark.data
def test_shared_data_counts(shared_data: Path) -> None:
    closed = get_task("vqa-rad-closed").load(shared_data)
    assert len(closed) == 272
    assert sum(s.reference in ("yes", "no") for s in closed) == 251
    assert len(get_task("pubmedqa").load(shared_data)) == 500
    assert len(get_task("mirage-bioasq").load(shared_data)) == 618
    assert {s.domain for s in closed} == {"HEAD", "CHEST", "ABD"}
