"""Report-generation metrics: BLEU-1..4, ROUGE-L, METEOR (and optional BERTScore).

Implementations, and the reference each one is tested against to 1e-6 (tests/evaluation):

* **BLEU (coco)** — corpus BLEU exactly as ``pycocoevalcap.bleu.Bleu`` computes it ("closest"
  reference length, its 1e-9/1e-15 smoothing constants). This is the number R2Gen-style report
  generation papers print.
* **BLEU (nltk)** — ``nltk.translate.bleu_score.corpus_bleu`` without smoothing (weights 1/n).
* **ROUGE-L** — ``rouge_score.rouge_scorer.RougeScorer(["rougeL"])`` F-measure averaged over
  samples (its own tokenizer: lower case, non-alphanumerics to spaces; ``use_stemmer`` optional;
  with several references the best F-measure, as ``score_multi``).
* **METEOR** — NLTK's ``meteor_score`` algorithm (alpha 0.9, beta 3, gamma 0.5; exact then
  Porter-stem matching, fragmentation penalty), averaged over samples, **without the WordNet
  synonym stage**: WordNet data is a runtime download that we do not do. With no synonyms NLTK's
  function gives identical numbers (tested with an empty WordNet stand-in). The Java METEOR 1.5
  of pycocoevalcap is available separately (:func:`coco_meteor`) when ``java`` is installed.

BLEU and METEOR take pre-tokenised text; :func:`tokenize` (lower case, ``\\w+`` runs, so
punctuation is dropped as pycocoevalcap's PTBTokenizer does) is what the tasks use.

Example:
    >>> stats = [report_stats("no acute findings", ["no acute cardiopulmonary findings"])]
    >>> round(report_metrics(stats)["bleu1"], 4)
    0.7165
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

_WORD = re.compile(r"\w+")
_ROUGE_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_ROUGE_VALID = re.compile(r"^[a-z0-9]+$")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; punctuation dropped."""
    return _WORD.findall((text or "").lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu_stats(hypothesis: Sequence[str], references: Sequence[Sequence[str]],
               n: int = 4) -> dict[str, Any]:
    """Per-sample BLEU sufficient statistics (clipped matches and guesses per order)."""
    correct, guess = [], []
    for order in range(1, n + 1):
        hyp = _ngrams(hypothesis, order)
        max_ref: Counter = Counter()
        for ref in references:
            for gram, count in _ngrams(ref, order).items():
                max_ref[gram] = max(max_ref[gram], count)
        correct.append(sum(min(c, max_ref[g]) for g, c in hyp.items()))
        guess.append(max(0, len(hypothesis) - order + 1))
    return {"testlen": len(hypothesis), "reflens": [len(r) for r in references],
            "correct": correct, "guess": guess}


def coco_bleu(stats: Sequence[dict[str, Any]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n as pycocoevalcap (option "closest")."""
    small, tiny = 1e-9, 1e-15
    testlen = sum(s["testlen"] for s in stats)
    reflen = sum(min((abs(r - s["testlen"]), r) for r in s["reflens"])[1] for s in stats)
    correct = [sum(s["correct"][k] for s in stats) for k in range(n)]
    guess = [sum(s["guess"][k] for s in stats) for k in range(n)]
    bleus, bleu = [], 1.0
    for k in range(n):
        bleu *= (correct[k] + tiny) / (guess[k] + small)
        bleus.append(bleu ** (1.0 / (k + 1)))
    ratio = (testlen + tiny) / (reflen + small)
    if ratio < 1:
        bleus = [b * math.exp(1 - 1 / ratio) for b in bleus]
    return bleus


def nltk_bleu(stats: Sequence[dict[str, Any]], n: int = 4) -> float:
    """Corpus BLEU-n as ``nltk.translate.bleu_score.corpus_bleu`` with uniform weights 1/n."""
    hyp_len = sum(s["testlen"] for s in stats)
    ref_len = sum(min(s["reflens"], key=lambda r, h=s["testlen"]: (abs(r - h), r)) for s in stats)
    numerators = [sum(s["correct"][k] for s in stats) for k in range(n)]
    denominators = [sum(max(1, s["guess"][k]) for s in stats) for k in range(n)]
    if numerators[0] == 0:
        return 0.0
    if hyp_len > ref_len:
        penalty = 1.0
    elif hyp_len == 0:
        penalty = 0.0
    else:
        penalty = math.exp(1 - ref_len / hyp_len)
    logs = [math.log(num / den) if num else math.log(sys.float_info.min)
            for num, den in zip(numerators, denominators, strict=False)]
    return penalty * math.exp(math.fsum(lg / n for lg in logs))


@lru_cache(maxsize=1)
def _porter() -> Any:
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


def rouge_tokens(text: str, use_stemmer: bool = False) -> list[str]:
    """rouge-score's default tokenizer."""
    tokens = _ROUGE_NON_ALNUM.sub(" ", (text or "").lower()).split()
    if use_stemmer:
        tokens = [_porter().stem(t) if len(t) > 3 else t for t in tokens]
    return [t for t in tokens if _ROUGE_VALID.match(t)]


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(hypothesis: str, references: Sequence[str], use_stemmer: bool = False) -> float:
    """ROUGE-L F-measure (rouge-score convention); the best over several references."""
    hyp = rouge_tokens(hypothesis, use_stemmer)
    best = 0.0
    for reference in references:
        ref = rouge_tokens(reference, use_stemmer)
        lcs = _lcs(ref, hyp)
        if not hyp or not ref or lcs == 0:
            continue
        p, r = lcs / len(hyp), lcs / len(ref)
        best = max(best, 2 * p * r / (p + r))
    return best


def _match(hyp: list[tuple[int, str]], ref: list[tuple[int, str]]
           ) -> tuple[list[tuple[int, int]], list[tuple[int, str]], list[tuple[int, str]]]:
    positions: dict[str, list[int]] = defaultdict(list)
    for j, (_, word) in enumerate(ref):
        positions[word].append(j)
    matches, used_h, used_r = [], set(), set()
    for i in range(len(hyp) - 1, -1, -1):  # NLTK matches from the end of the hypothesis
        candidates = positions.get(hyp[i][1])
        if candidates:
            j = candidates.pop()
            used_h.add(i)
            used_r.add(j)
            matches.append((hyp[i][0], ref[j][0]))
    return (matches, [p for i, p in enumerate(hyp) if i not in used_h],
            [p for j, p in enumerate(ref) if j not in used_r])


def _chunks(matches: list[tuple[int, int]]) -> int:
    chunks = 1
    for (h0, r0), (h1, r1) in zip(matches, matches[1:], strict=False):
        if not (h1 == h0 + 1 and r1 == r0 + 1):
            chunks += 1
    return chunks


def meteor_single(hypothesis: Sequence[str], reference: Sequence[str], alpha: float = 0.9,
                  beta: float = 3.0, gamma: float = 0.5) -> float:
    """NLTK ``single_meteor_score`` without WordNet synonyms (exact, then Porter stems)."""
    hyp = list(enumerate(w.lower() for w in hypothesis))
    ref = list(enumerate(w.lower() for w in reference))
    exact, hyp_left, ref_left = _match(hyp, ref)
    stem = _porter().stem
    stemmed, _, _ = _match([(i, stem(w)) for i, w in hyp_left], [(j, stem(w)) for j, w in ref_left])
    matches = sorted(exact + stemmed, key=lambda pair: pair[0])
    if not matches or not hyp or not ref:
        return 0.0
    precision, recall = len(matches) / len(hyp), len(matches) / len(ref)
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    penalty = gamma * (_chunks(matches) / len(matches)) ** beta
    return (1 - penalty) * fmean


def meteor(hypothesis: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Best single-reference METEOR over the references (NLTK ``meteor_score``)."""
    return max(meteor_single(hypothesis, ref) for ref in references)


def report_stats(hypothesis: str, references: Sequence[str], use_stemmer: bool = False
                 ) -> dict[str, Any]:
    """Per-sample stats for :func:`report_metrics`."""
    hyp = tokenize(hypothesis)
    refs = [tokenize(r) for r in references] or [[]]
    return {**bleu_stats(hyp, refs), "rouge_l": rouge_l(hypothesis, references, use_stemmer),
            "meteor": meteor(hyp, refs)}


def report_metrics(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """BLEU-1..4 (coco), BLEU-4 (nltk), mean ROUGE-L and mean METEOR over samples."""
    if not stats:
        return {"n": 0}
    b1, b2, b3, b4 = coco_bleu(stats)
    n = len(stats)
    return {"n": n, "bleu1": b1, "bleu2": b2, "bleu3": b3, "bleu4": b4,
            "bleu4_nltk": nltk_bleu(stats), "rouge_l": sum(s["rouge_l"] for s in stats) / n,
            "meteor": sum(s["meteor"] for s in stats) / n}


def coco_meteor(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """pycocoevalcap's Java METEOR 1.5 (needs ``java`` on PATH and the ``dev`` extra)."""
    import shutil

    from mmedrag.errors import MmedragError, optional_import

    if shutil.which("java") is None:
        raise MmedragError("coco METEOR needs Java on PATH (apt-get install default-jre)")
    module = optional_import("pycocoevalcap.meteor.meteor", "dev")
    gts = {i: [" ".join(tokenize(r)) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(tokenize(h))] for i, h in enumerate(hypotheses)}
    score, _ = module.Meteor().compute_score(gts, res)
    return float(score)


def bert_score(hypotheses: Sequence[str], references: Sequence[str], model_path: str,
               layer: int = -1) -> dict[str, float]:
    """Greedy-matching BERTScore (P, R, F1; no idf, no baseline rescaling) with a local model.

    ``model_path`` is a local Hugging Face model folder; nothing is downloaded.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModel.from_pretrained(model_path, local_files_only=True).eval()

    def embed(text: str) -> torch.Tensor:
        batch = tok(text, return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            out = model(**batch, output_hidden_states=True).hidden_states[layer][0, 1:-1]
        return torch.nn.functional.normalize(out, dim=-1)

    ps, rs, fs = [], [], []
    for hyp, ref in zip(hypotheses, references, strict=False):
        h, r = embed(hyp), embed(ref)
        if len(h) == 0 or len(r) == 0:
            ps.append(0.0), rs.append(0.0), fs.append(0.0)
            continue
        sim = h @ r.T
        p, rc = float(sim.max(dim=1).values.mean()), float(sim.max(dim=0).values.mean())
        ps.append(p), rs.append(rc), fs.append(2 * p * rc / (p + rc) if p + rc else 0.0)
    n = max(1, len(fs))
    return {"bertscore_p": sum(ps) / n, "bertscore_r": sum(rs) / n, "bertscore_f1": sum(fs) / n}
