"""The built-in task definitions (registered on import) and their scorers.

Data paths are relative to the data root (``--data``, default ``../shared/data``). Every task
can read a user's own file instead: ``--task vqa-closed=path/to/slake/test.json``.

Scoring rules (documented here because reports quote them):
    * closed_vqa: ``correct`` = the parsed yes/no equals the reference; unparseable = wrong.
      Closed questions with a non-yes/no reference use the open_vqa rule below.
    * open_vqa: exact match after SQuAD normalisation, token recall and token F1 against the
      reference; ``correct`` = exact match or every reference token present (recall 1).
    * mcq / mcq_voc: ``correct`` = the parsed option letter equals the reference letter.
    * report / longform: BLEU, ROUGE-L, METEOR (textmetrics); no per-sample ``correct``.
    * retrieval: ranks of the sample's relevant record ids (``meta["relevant"]``).
    * domain_id: the router's domain equals the sample's domain.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from mmedrag.evaluation import metrics as m
from mmedrag.evaluation import textmetrics as tm
from mmedrag.evaluation.tasks import Sample, TaskSpec, register_task
from mmedrag.evaluation.tasks import loaders as ld

RETRIEVAL_KINDS = ("retrieval", "domain_id")


def score_closed(sample: Sample, answer: Any) -> dict[str, Any]:
    if sample.reference not in ("yes", "no"):  # closed but not yes/no: the open-answer rule
        stats = score_open(sample, answer)
        return {"pred": m.normalize_answer(answer.text or "") or None,
                "ref": m.normalize_answer(str(sample.reference)), "prob": None,
                "correct": stats["correct"]}
    pred = answer.parsed if answer.parsed in ("yes", "no") else None
    return {"pred": pred, "ref": sample.reference, "prob": answer.yes_probability,
            "correct": pred == sample.reference,
            "disagrees": bool(getattr(answer, "warnings", None))}


def score_open(sample: Sample, answer: Any) -> dict[str, Any]:
    text = answer.text or ""
    em = max(m.exact_match(text, ref) for ref in sample.references)
    scores = [m.token_scores(text, ref) for ref in sample.references]
    recall = max(s[1] for s in scores)
    return {"em": em, "recall": recall, "f1": max(s[2] for s in scores),
            "correct": bool(em == 1.0 or recall == 1.0)}


def score_choice(sample: Sample, answer: Any) -> dict[str, Any]:
    pred = answer.parsed if sample.options and answer.parsed in sample.options else None
    return {"pred": pred, "ref": sample.reference, "correct": pred == sample.reference}


def score_text(sample: Sample, answer: Any) -> dict[str, Any]:
    stats = tm.report_stats(answer.text or "", sample.references)
    f1 = max(m.token_scores(answer.text or "", ref)[2] for ref in sample.references)
    return {**stats, "token_f1": f1, "correct": None}


def text_metrics(stats: list[dict[str, Any]]) -> dict[str, Any]:
    out = tm.report_metrics(stats)
    if stats:
        out["token_f1"] = sum(s["token_f1"] for s in stats) / len(stats)
    return out


def score_retrieval(sample: Sample, ranking: list[str]) -> dict[str, Any]:
    relevant = set(sample.meta.get("relevant", []))
    return {"ranking": list(ranking), "relevant": sorted(relevant),
            "correct": bool(ranking and ranking[0] in relevant)}


def retrieval_aggregate(stats: list[dict[str, Any]]) -> dict[str, Any]:
    from mmedrag.ir_metrics import retrieval_metrics

    if not stats:
        return {"n": 0}
    out = retrieval_metrics([s["ranking"] for s in stats], [set(s["relevant"]) for s in stats])
    return {"n": len(stats), **out}


def score_domain(sample: Sample, predicted: str | None) -> dict[str, Any]:
    return {"pred": predicted, "ref": sample.domain, "correct": predicted == sample.domain}


def domain_aggregate(stats: list[dict[str, Any]]) -> dict[str, Any]:
    from mmedrag.ir_metrics import domain_accuracy

    if not stats:
        return {"n": 0}
    accuracy, _, _ = domain_accuracy([s["ref"] for s in stats], [s["pred"] for s in stats])
    return {"n": len(stats), "accuracy": accuracy,
            "fallback_rate": sum(s["pred"] is None for s in stats) / len(stats)}


SCORERS = {"closed_vqa": (score_closed, m.closed_vqa_metrics, "accuracy"),
           "open_vqa": (score_open, m.open_vqa_metrics, "token_f1"),
           "mcq": (score_choice, m.choice_metrics, "accuracy"),
           "mcq_voc": (score_choice, m.choice_metrics, "accuracy"),
           "report": (score_text, text_metrics, "rouge_l"),
           "longform": (score_text, text_metrics, "rouge_l"),
           "retrieval": (score_retrieval, retrieval_aggregate, "R@1"),
           "domain_id": (score_domain, domain_aggregate, "accuracy")}


def define(name: str, kind: str, loader: Any, data: str, groups: tuple[str, ...],
           description: str) -> TaskSpec:
    """Register a task whose scoring follows its ``kind``."""
    scorer, aggregate, primary = SCORERS[kind]
    return register_task(TaskSpec(name=name, kind=kind, loader=loader, scorer=scorer,
                                  aggregate=aggregate, primary=primary, data=data,
                                  groups=groups, description=description))


def _pubmed_retrieval(path: Any) -> Any:
    for sample in ld.pubmedqa_samples(path):
        yield Sample(id=sample.id, question=sample.question, reference=f"pubmed{sample.id}",
                     domain="pubmedqa", meta={"relevant": [f"pubmed{sample.id}"]})


define("vqa-rad-closed", "closed_vqa", partial(ld.vqa_samples, closed=True),
       "vqa-rad/test.jsonl", ("vqa", "vqa-rad", "closed"),
       "VQA-RAD test (MEVF split), 272 closed questions (251 yes/no); by organ")
define("vqa-rad-open", "open_vqa", partial(ld.vqa_samples, closed=False),
       "vqa-rad/test.jsonl", ("vqa", "vqa-rad"), "VQA-RAD test, 179 open questions")
define("vqa-med-2019", "open_vqa", ld.vqa_samples, "vqa-med-2019-val/val.jsonl",
       ("vqa",), "ImageCLEF VQA-Med 2019 validation, 2,000 open questions by category")
define("vqa-closed", "closed_vqa", partial(ld.vqa_samples, closed=True), "", (),
       "any VQA JSON/JSONL (SLAKE, PathVQA, MMed-RAG/RULE files): yes/no questions")
define("vqa-open", "open_vqa", partial(ld.vqa_samples, closed=False), "", (),
       "any VQA JSON/JSONL: open questions")
define("r2gen-report", "report", ld.r2gen_samples, "", ("report",),
       "report generation from an R2Gen annotation.json (IU-Xray, MIMIC-CXR) test split")
define("medpix-caption", "report", partial(ld.caption_samples, text_field="caption",
                                           domain_field="modality", split="dev"),
       "medpix/pairs.jsonl", ("report",), "MedPix 2.0 dev captions as short report generation")
define("covid-cxr-notes", "report", partial(ld.caption_samples, text_field="clinical_notes",
                                            domain_field="modality"),
       "covid-cxr/pairs.jsonl", (), "COVID-19 CXR clinical notes (weak report targets)")
for _dataset in ("mmlu", "medqa", "medmcqa", "pubmedqa", "bioasq"):
    define(f"mirage-{_dataset}", "mcq", partial(ld.mirage_samples, dataset=_dataset),
           "mirage/benchmark.json", ("mirage", "text-qa"),
           f"MIRAGE {_dataset} (question only, options A..)")
define("pubmedqa", "mcq", ld.pubmedqa_samples, "pubmedqa", ("text-qa",),
       "PubMedQA* test (500, question only; own abstract excluded from retrieval)")
define("bioasq-yesno", "closed_vqa", ld.bioasq_samples, "bioasq/questions.jsonl", ("text-qa",),
       "BioASQ Task B yes/no (618)")
define("medagentsbench", "mcq", ld.medagents_samples, "", (),
       "a MedAgentsBench JSONL file (question, options, answer_idx)")
define("medquad", "longform", ld.medquad_samples, "medquad/qa.jsonl", ("longform",),
       "MedQuAD consumer health long-form answers (ROUGE-L, BLEU, METEOR)")
define("pubmedqa-retrieval", "retrieval", _pubmed_retrieval, "pubmedqa", ("retrieval",),
       "PubMedQA questions → their own abstract (R@k, MRR, nDCG@10) over a pubmed index")
define("vqa-rad-domain", "domain_id", partial(ld.vqa_samples, closed=None),
       "vqa-rad/test.jsonl", ("retrieval",),
       "domain identification: the router's domain vs the VQA-RAD organ label")
