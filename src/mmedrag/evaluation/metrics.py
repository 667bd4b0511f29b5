"""Answer-level metrics: yes/no classification, open VQA overlap, multiple choice, bootstrap CIs.

Every task scores a sample into a small *stats* dict and aggregates a list of stats into metrics.
Keeping the two apart makes bootstrap confidence intervals cheap: resample the stats, re-aggregate.

Example:
    >>> stats = [{"pred": "yes", "ref": "yes"}, {"pred": "no", "ref": "yes"}]
    >>> closed_vqa_metrics(stats)["accuracy"]
    0.5
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = (text or "").lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_scores(prediction: str, reference: str) -> tuple[float, float, float]:
    """(precision, recall, F1) of the normalised token multisets (SQuAD / MMed-RAG open VQA)."""
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred or not ref:
        same = float(pred == ref)
        return same, same, same
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0, 0.0, 0.0
    precision, recall = common / len(pred), common / len(ref)
    return precision, recall, 2 * precision * recall / (precision + recall)


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); None with one class."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def closed_vqa_metrics(stats: Sequence[dict[str, Any]], positive: str = "yes") -> dict[str, Any]:
    """Closed-question metrics with ``positive`` as the positive class.

    Each stats dict holds ``pred`` (parsed answer or None = unparseable, counted wrong), ``ref``,
    optionally ``correct`` (else ``pred == ref``) and ``prob`` (the model's probability of
    ``positive``). Accuracy and the majority-class baseline (accuracy of always answering the most
    frequent reference) cover every sample; precision, recall and F1 of the positive class, AUC
    and ``accuracy_prob`` (answer = yes when the probability is at least 0.5; both only when
    every yes/no sample has a probability) and the unparseable share cover the yes/no samples
    (``n_yes_no``).
    """
    n = len(stats)
    if n == 0:
        return {"n": 0}
    correct = [bool(s["correct"]) if s.get("correct") is not None else s.get("pred") == s["ref"]
               for s in stats]
    binary = [s for s in stats if s["ref"] in (positive, "no")]
    refs = [s["ref"] for s in binary]
    preds = [s.get("pred") for s in binary]
    tp = sum(p == positive and r == positive for p, r in zip(preds, refs, strict=False))
    fp = sum(p == positive and r != positive for p, r in zip(preds, refs, strict=False))
    fn = sum(p != positive and r == positive for p, r in zip(preds, refs, strict=False))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    majority_label, majority_count = Counter(s["ref"] for s in stats).most_common(1)[0]
    out: dict[str, Any] = {
        "n": n, "accuracy": sum(correct) / n, "majority_baseline": majority_count / n,
        "majority_label": majority_label, "n_yes_no": len(binary),
        "precision": precision, "recall": recall, "f1": f1,
        "unparsed_rate": sum(p is None for p in preds) / len(binary) if binary else 0.0,
        # answers whose text reads the other way than the parsed yes/no (parsed from P(yes))
        "text_parse_disagreement_rate": sum(bool(s.get("disagrees")) for s in stats) / n,
    }
    probs = [s.get("prob") for s in binary]
    if binary and all(p is not None for p in probs):
        out["auc"] = roc_auc([int(r == positive) for r in refs], [float(p) for p in probs])
        out["accuracy_prob"] = sum((float(p) >= 0.5) == (r == positive)
                                   for p, r in zip(probs, refs, strict=False)) / len(binary)
    return out


def open_vqa_metrics(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean exact match, token recall and token F1 over stats with ``em``, ``recall``, ``f1``."""
    n = len(stats)
    if n == 0:
        return {"n": 0}
    return {"n": n, "exact_match": sum(s["em"] for s in stats) / n,
            "token_recall": sum(s["recall"] for s in stats) / n,
            "token_f1": sum(s["f1"] for s in stats) / n}


def choice_metrics(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy over options, the majority-label baseline, and the unparseable share."""
    n = len(stats)
    if n == 0:
        return {"n": 0}
    refs = [s["ref"] for s in stats]
    majority_label, majority_count = Counter(refs).most_common(1)[0]
    return {"n": n, "accuracy": sum(s.get("pred") == s["ref"] for s in stats) / n,
            "majority_baseline": majority_count / n, "majority_label": majority_label,
            "unparsed_rate": sum(s.get("pred") is None for s in stats) / n}


def bootstrap_ci(stats: Sequence[dict[str, Any]],
                 aggregate: Callable[[Sequence[dict[str, Any]]], dict[str, Any]],
                 resamples: int = 1000, level: float = 0.95, seed: int = 0
                 ) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs for every numeric metric ``aggregate`` returns.

    Samples are drawn with replacement ``resamples`` times with a fixed seed, so a report is
    reproducible. Metrics that are None in a resample (e.g. AUC with one class) are skipped.
    """
    if len(stats) < 2:
        return {}
    rng = np.random.default_rng(seed)
    n = len(stats)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        for key, value in aggregate([stats[i] for i in idx]).items():
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and key != "n" and not key.startswith("n_")):
                if not math.isnan(float(value)):
                    draws.setdefault(key, []).append(float(value))
    tail = (1.0 - level) / 2.0 * 100.0
    return {key: (float(np.percentile(vals, tail)), float(np.percentile(vals, 100.0 - tail)))
            for key, vals in draws.items()}
