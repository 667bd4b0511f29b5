"""Loaders for the benchmark formats people have on disk.

Each loader takes a file (or folder) path and yields :class:`Sample` objects, raising
:class:`InputError` naming the file, line and field on bad input.

Formats:
    * **VQA** JSON / JSONL (VQA-RAD as converted in ../shared/data or MEVF's ``trainset.json``,
      SLAKE ``test.json`` (English only), PathVQA JSON, VQA-Med 2019 ``val.jsonl``, and the
      MMed-RAG / RULE / LLaVA-Med question files). Field names are recognised by alias:
      id ``qid|question_id|id``, image ``image|image_name|img_name|image_path`` (string or list),
      question ``question|text|query``, answer ``answer|gt_answer|gt_ans|label``.
    * **R2Gen** ``annotation.json`` (IU-Xray, MIMIC-CXR): ``{"test": [{id, report, image_path}]}``.
    * **MIRAGE** ``benchmark.json`` (``{dataset: {qid: {question, options, answer}}}``).
    * **MedAgentsBench** JSONL (``question, options, answer_idx``).
    * PubMedQA ``ori_pqal.json`` + ``test_ground_truth.json``, BioASQ yes/no JSONL, MedQuAD JSONL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmedrag.errors import InputError
from mmedrag.evaluation.tasks import Sample
from mmedrag.ingest.jsonl import iter_jsonl

_ID = ("qid", "question_id", "id", "realidx")
_IMAGE = ("image", "image_name", "img_name", "image_path", "images")
_QUESTION = ("question", "text", "query")
_ANSWER = ("answer", "gt_answer", "gt_ans", "label")
_YES_NO = {"yes": "yes", "no": "no", "true": "yes", "false": "no"}
_IMAGE_DIRS = ("", "images", "imgs", "image", "VQA_RAD Image Folder")


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or position, object) from a JSONL file or a JSON list / ``{"data": [...]}`` file."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        yield from iter_jsonl(path)
        return
    data = load_json(path)
    if isinstance(data, dict):
        data = data.get("data", data.get("test", data.get("questions")))
    if not isinstance(data, list):
        raise InputError("expected a JSON list of objects (or JSONL)", path=str(path))
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise InputError(f"item {number} is not an object", path=str(path))
        yield number, row


def load_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}", path=str(path), line=exc.lineno) from None


def _pick(row: dict[str, Any], names: tuple[str, ...], path: Path, line: int,
          required: bool = True) -> Any:
    for name in names:
        if name in row and row[name] not in (None, ""):
            return row[name]
    if required:
        raise InputError(f"missing field (one of {', '.join(names)})", path=str(path), line=line,
                         field=names[0])
    return None


def _image_path(value: Any, base: Path) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0] if value else None
        if value is None:
            return None
    candidate = Path(str(value))
    if candidate.is_absolute():
        return str(candidate)
    for sub in _IMAGE_DIRS:
        full = base / sub / candidate
        if full.exists():
            return str(full.resolve())
    return str((base / candidate).resolve())


def yes_no(value: Any) -> str | None:
    """'yes' / 'no' for yes/no-like answers (case-insensitive), else None."""
    return _YES_NO.get(str(value).strip().lower().rstrip("."))


def vqa_samples(path: Path, closed: bool | None = None) -> Iterator[Sample]:
    """VQA items; ``closed=True`` keeps closed questions, ``False`` the open ones, None all.

    A question is closed when ``answer_type`` says CLOSED (VQA-RAD, SLAKE), or, without
    ``answer_type``, when its answer is yes/no. Closed questions whose answer is not yes/no
    ("Is this CT or MRI?" → "CT") get ``meta["kind"] = "open_vqa"`` so the runner asks them with
    the short-answer prompt. SLAKE's Chinese items are skipped.
    """
    base = path.parent
    for line, row in read_rows(path):
        if str(row.get("q_lang", "en")).lower() != "en":
            continue
        answer = str(_pick(row, _ANSWER, path, line)).strip()
        kind = str(row.get("answer_type", "")).strip().upper()
        is_yes_no = yes_no(answer) is not None
        is_closed = kind == "CLOSED" or (not kind and is_yes_no)
        if closed is not None and is_closed != closed:
            continue
        qid = str(_pick(row, _ID, path, line, required=False) or f"{path.stem}-{line}")
        domain = str(row.get("organ") or row.get("image_organ") or row.get("location")
                     or row.get("modality") or row.get("category") or "")
        meta = {k: row[k] for k in ("question_type", "answer_type", "category", "content_type")
                if k in row}
        if is_closed and not is_yes_no:
            meta["kind"] = "open_vqa"  # closed but not yes/no ("CT or MRI?"): short-answer prompt
        yield Sample(id=qid, question=str(_pick(row, _QUESTION, path, line)),
                     reference=yes_no(answer) if is_yes_no else answer,
                     image=_image_path(_pick(row, _IMAGE, path, line, required=False), base),
                     domain=domain.strip().upper() if domain.isupper() else domain, meta=meta)


def r2gen_samples(path: Path, split: str = "test", image_dir: Path | None = None,
                  instruction: str = "Describe the findings of this radiograph.",
                  ) -> Iterator[Sample]:
    """Report generation items from an R2Gen ``annotation.json`` (IU-Xray, MIMIC-CXR)."""
    data = load_json(path)
    if not isinstance(data, dict) or split not in data:
        raise InputError(f"expected a JSON object with a '{split}' list (R2Gen annotation)",
                         path=str(path), field=split)
    images = image_dir or (path.parent / "images")
    for number, row in enumerate(data[split], start=1):
        if not isinstance(row, dict) or "report" not in row:
            raise InputError(f"{split}[{number - 1}] has no 'report'", path=str(path),
                             field="report")
        paths = row.get("image_path") or []
        first = paths[0] if isinstance(paths, list) and paths else paths or None
        yield Sample(id=str(row.get("id", f"{split}-{number}")), question=instruction,
                     reference=str(row["report"]).strip(),
                     image=str((images / first).resolve()) if first else None,
                     domain=str(row.get("domain", "radiology")),
                     meta={"study_id": row.get("study_id"), "subject_id": row.get("subject_id")})


def _options(value: Any, path: Path, line: int) -> dict[str, str]:
    if isinstance(value, list):
        return {chr(ord("A") + i): str(v) for i, v in enumerate(value)}
    if not isinstance(value, dict) or not value:
        raise InputError("'options' must be an object {A: ...} or a list", path=str(path),
                         line=line, field="options")
    return {str(k).strip().upper(): str(v) for k, v in value.items()}


def mirage_samples(path: Path, dataset: str) -> Iterator[Sample]:
    """One dataset of MIRAGE ``benchmark.json`` (mmlu, medqa, medmcqa, pubmedqa, bioasq)."""
    data = load_json(path)
    if not isinstance(data, dict) or dataset not in data:
        have = ", ".join(data) if isinstance(data, dict) else "-"
        raise InputError(f"no dataset '{dataset}' (have: {have})", path=str(path), field=dataset)
    for qid, item in data[dataset].items():
        options = _options(item.get("options"), path, 0)
        answer = str(item.get("answer", "")).strip().upper()
        if answer not in options:
            raise InputError(f"{dataset}/{qid}: answer {answer!r} is not an option", path=str(path),
                             field="answer")
        pmids = item.get("PMID") or []
        yield Sample(id=str(qid), question=str(item["question"]), reference=answer,
                     options=options, domain=dataset,
                     exclude_ids={f"pubmed{p}" for p in pmids},
                     meta={"subject": qid.rsplit("-", 1)[0]} if dataset == "mmlu" else {})


def medagents_samples(path: Path) -> Iterator[Sample]:
    """MedAgentsBench JSONL: ``question``, ``options`` {A..}, ``answer_idx`` (letter)."""
    for line, row in read_rows(path):
        options = _options(_pick(row, ("options",), path, line), path, line)
        raw = str(_pick(row, ("answer_idx", "answer"), path, line)).strip()
        answer = raw.upper()
        if answer not in options:
            matches = [k for k, v in options.items() if v.strip() == raw]
            if not matches:
                raise InputError(f"answer {answer!r} is not an option letter", path=str(path),
                                 line=line, field="answer_idx")
            answer = matches[0]
        yield Sample(id=str(row.get("realidx", row.get("id", f"{path.stem}-{line}"))),
                     question=str(row["question"]), reference=answer, options=options,
                     domain=str(row.get("dataset", path.stem)))


def pubmedqa_samples(path: Path) -> Iterator[Sample]:
    """PubMedQA* test: ``ori_pqal.json`` questions, labels from ``test_ground_truth.json``.

    Question-only (PubMedQA*, as MIRAGE), options A yes / B no / C maybe. Each sample's own
    abstract (``pubmed<PMID>``) is in ``exclude_ids`` so retrieval can never return it.
    """
    folder = path if path.is_dir() else path.parent
    items = load_json(folder / "ori_pqal.json")
    truth = load_json(folder / "test_ground_truth.json")
    options = {"A": "yes", "B": "no", "C": "maybe"}
    letter = {v: k for k, v in options.items()}
    for pmid, label in truth.items():
        if pmid not in items:
            raise InputError(f"test PMID {pmid} is not in ori_pqal.json", path=str(folder))
        yield Sample(id=str(pmid), question=str(items[pmid]["QUESTION"]),
                     reference=letter[str(label).lower()], options=dict(options),
                     domain="pubmedqa", exclude_ids={f"pubmed{pmid}"})


def bioasq_samples(path: Path) -> Iterator[Sample]:
    """BioASQ yes/no JSONL (``question``, ``exact_answer``); own snippets are not used."""
    for line, row in read_rows(path):
        answer = yes_no(_pick(row, ("exact_answer", "answer"), path, line))
        if answer is None:
            raise InputError("exact_answer is not yes/no", path=str(path), line=line,
                             field="exact_answer")
        yield Sample(id=str(row["id"]), question=str(row["question"]), reference=answer,
                     domain="bioasq")


def medquad_samples(path: Path) -> Iterator[Sample]:
    """MedQuAD long-form QA (``question``, ``answer``); domain = source collection."""
    for line, row in read_rows(path):
        yield Sample(id=str(_pick(row, ("id",), path, line)),
                     question=str(_pick(row, ("question",), path, line)),
                     reference=str(_pick(row, ("answer",), path, line)),
                     domain=str(row.get("source", "")),
                     meta={"question_type": row.get("question_type", "")})


def caption_samples(path: Path, text_field: str, domain_field: str,
                    instruction: str = "Describe the findings of this image.",
                    split: str | None = None) -> Iterator[Sample]:
    """Image–caption manifests as report generation (MedPix captions, COVID-CXR notes)."""
    for line, row in read_rows(path):
        if split is not None and row.get("split") not in (None, split):
            continue
        text = str(row.get(text_field) or "").strip()
        if not text:
            continue
        yield Sample(id=str(_pick(row, ("id",), path, line)), question=instruction,
                     reference=text, image=_image_path(row.get("image"), path.parent),
                     domain=str(row.get(domain_field, "")))
