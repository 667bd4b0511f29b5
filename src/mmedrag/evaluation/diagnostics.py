"""Factuality diagnostics from MMed-RAG / RULE: over-reliance, copy-reference, evidence support.

Definitions (what the report prints):

* **Over-reliance rate** — among the samples answered *correctly without RAG* (the denominator,
  always printed), the share answered *wrongly with RAG* (RULE's "over-reliance"). The mirror
  figure, **rescue rate**, is the share of samples wrong without RAG that RAG makes right.
* **Copy-reference rate** — the share of samples still answered correctly when the generator's
  image is replaced by N(0,1) noise clipped to [0, 1] while retrieval keeps the real image
  (``pipeline.answer(q, image=noise, retrieval_image=real)``). Printed over all samples run that
  way and over those answered correctly with the real image (MMed-RAG's cross-modality case).
  For a generator that does not see images the noise changes nothing, so the rate is 1 by
  construction: read it only for vision-language generators.
* **Evidence support** — an answer is *supported* by an evidence text under this rule:
  closed yes/no (and options that are yes/no/maybe): at least one content word of the question
  (stop words and words under 3 letters removed) occurs in the evidence; the evidence's polarity
  is "no" when a negation cue (no, not, without, absent, negative, free, denies, neither, nor,
  none) appears within the 4 tokens before the first such occurrence, else "yes"; supported =
  polarity equals the parsed answer ("maybe" is never supported). Other options and open
  answers: at least half of the answer's content words (at least one) occur in the evidence.
  ``support_rate_cited`` uses the evidence the answer cites ([n]) over answers citing at least
  one item; ``support_rate_shown`` uses any shown evidence over answers that were shown some.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")
_NEGATIONS = {"no", "not", "without", "absent", "negative", "free", "denies", "neither",
              "nor", "none", "non"}
_STOP = set("""a an the is are was were be been being of in on at to for with by from and or
this that these there their it its as any does do did has have had can could would should
which what where when who whom how why image images shown seen show shows patient present
evidence visible noted""".split())


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall((text or "").lower()) if len(w) >= 3 and w not in _STOP]


def polarity(question: str, evidence: str) -> str | None:
    """"yes"/"no" as the evidence speaks about the question's first matching content word."""
    words = _WORD.findall((evidence or "").lower())
    positions = {w: i for i, w in reversed(list(enumerate(words)))}
    for word in content_words(question):
        if word in positions:
            i = positions[word]
            return "no" if _NEGATIONS & set(words[max(0, i - 4):i]) else "yes"
    return None


def supports(question: str, answer: str | None, evidence: str,
             options: dict[str, str] | None = None) -> bool:
    """Whether ``evidence`` supports ``answer`` under the rule in the module docstring."""
    if not answer:
        return False
    claim = options.get(answer, answer) if options else answer
    claim_norm = claim.strip().lower().rstrip(".")
    if claim_norm in ("yes", "no", "maybe"):
        return claim_norm != "maybe" and polarity(question, evidence) == claim_norm
    wanted = set(content_words(claim))
    if not wanted:
        return False
    found = wanted & set(_WORD.findall((evidence or "").lower()))
    return len(found) >= max(1, (len(wanted) + 1) // 2)


def evidence_support(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Citation and support rates over rows that were shown evidence."""
    shown = [r for r in rows if r.get("evidence") and r.get("kind") != "retrieval"]
    cited = [r for r in shown if any(e.get("cited") for e in r["evidence"])]

    def ok(row: dict[str, Any], only_cited: bool) -> bool:
        answer = row.get("parsed") or row.get("raw")
        texts = [e.get("text", "") for e in row["evidence"] if e.get("cited") or not only_cited]
        return any(supports(row["question"], answer, t, row.get("options")) for t in texts)

    return {"answers_with_evidence": len(shown), "answers_citing": len(cited),
            "citation_rate": len(cited) / len(shown) if shown else None,
            "support_rate_cited": (sum(ok(r, True) for r in cited) / len(cited)) if cited else None,
            "support_rate_shown":
                (sum(ok(r, False) for r in shown) / len(shown)) if shown else None}


def over_reliance(without: Sequence[dict[str, Any]], with_rag: Sequence[dict[str, Any]]
                  ) -> dict[str, Any]:
    """Paired by sample id: over-reliance and rescue rates, with their denominators."""
    base = {r["id"]: bool(r["correct"]) for r in without if r.get("correct") is not None}
    pairs = [(base[r["id"]], bool(r["correct"])) for r in with_rag
             if r["id"] in base and r.get("correct") is not None]
    right = [w for b, w in pairs if b]
    wrong = [w for b, w in pairs if not b]
    return {"paired": len(pairs),
            "correct_without_rag": len(right),
            "over_reliance": sum(not w for w in right) / len(right) if right else None,
            "over_reliance_count": sum(not w for w in right),
            "wrong_without_rag": len(wrong),
            "rescue": sum(wrong) / len(wrong) if wrong else None,
            "rescue_count": sum(wrong)}


def copy_reference(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Copy-reference rates for rows answered with a noise image as well (None if none were)."""
    probed = [r for r in rows if "noise_correct" in r]
    if not probed:
        return None
    right = [r for r in probed if r.get("correct")]
    return {"probed": len(probed),
            "copy_reference_rate": sum(r["noise_correct"] for r in probed) / len(probed),
            "correct_with_image": len(right),
            "copy_reference_rate_of_correct":
                sum(r["noise_correct"] for r in right) / len(right) if right else None,
            "image_seen": any(r.get("image_seen") for r in probed)}
