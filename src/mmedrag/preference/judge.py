"""Is a model's answer right? The task-aware judge the preference builder uses.

Rules (stated so the pair counts can be reproduced):

* closed questions (yes/no, ``answer_type`` CLOSED, PubMedQA's yes/no/maybe): the first
  yes/no/maybe word of the output must equal the truth's (parsed equality);
* multiple choice (``options`` given): the chosen letter (``A``/``(B)``/``Answer: C`` or the
  option's text) must equal the truth's letter;
* open questions: the SQuAD-normalised output (lower case, no punctuation, no articles) equals
  the truth, *or* their token F1 is at least ``f1_threshold`` (default 0.5). The truth also
  counts as found when the whole normalised truth appears as a phrase in a short output
  (at most ``contains_max_tokens`` tokens), so "The liver." matches "liver".

When the evaluation harness's parsed answer is supplied (``Answer.parsed``), it is used in place
of parsing the raw text.

Example:
    >>> judge = Judge()
    >>> judge.is_correct("Yes, there is a fracture.", "yes", kind="closed")
    True
    >>> judge.is_correct("left lung", "the left lung", kind="open")
    True
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

CLOSED_WORDS = ("yes", "no", "maybe")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_LETTER = re.compile(r"^\s*[\(\[]?([A-Z])[\)\]\.:,]?(?:\s|$)")
_ANSWER_IS = re.compile(r"\b(?i:answer)\s*(?i:is)?\s*[:\-]?\s*[\(\[]?([A-Z])\b")


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, squeeze spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, truth: str) -> float:
    """Token-overlap F1 between normalised strings (SQuAD definition)."""
    pred, gold = normalize(prediction).split(), normalize(truth).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def parse_closed(text: str) -> str | None:
    """The first yes/no/maybe word of ``text``, or None."""
    for word in normalize(text).split():
        if word in CLOSED_WORDS:
            return word
    return None


def parse_choice(text: str, options: dict[str, str]) -> str | None:
    """The option letter ``text`` picks: a leading letter, or the one option whose text it names."""
    letters = {key.upper() for key in options}
    match = _ANSWER_IS.search(text) or _LETTER.match(text)
    if match and match.group(1).upper() in letters:
        return match.group(1).upper()
    norm = normalize(text)
    named = [key.upper() for key, value in options.items() if normalize(value) and
             normalize(value) in norm]
    return named[0] if len(named) == 1 else None


def answer_kind(answer: str, options: dict[str, str] | None = None,
                answer_type: str | None = None) -> str:
    """``"choice"``, ``"closed"`` or ``"open"`` from the sample's options, type and truth."""
    if options:
        return "choice"
    if answer_type:
        return "closed" if answer_type.strip().upper() == "CLOSED" and \
            normalize(answer) in CLOSED_WORDS else "open"
    return "closed" if normalize(answer) in CLOSED_WORDS else "open"


@dataclass(frozen=True)
class Judge:
    """Decides whether an output answers the truth (see the module docstring for the rules).

    Args:
        f1_threshold: token F1 at or above which an open answer counts as right.
        contains_max_tokens: longest output (in tokens) for which containing the truth counts.
    """

    f1_threshold: float = 0.5
    contains_max_tokens: int = 12

    def parse(self, text: str, kind: str, options: dict[str, str] | None = None) -> str | None:
        """The comparable form of an output: a closed word, a letter, or normalised text."""
        if kind == "closed":
            return parse_closed(text)
        if kind == "choice":
            return parse_choice(text, options or {})
        return normalize(text) or None

    def is_correct(self, output: str, truth: str, kind: str = "open",
                   options: dict[str, str] | None = None, parsed: str | None = None) -> bool:
        """Whether ``output`` (or the harness's ``parsed`` form of it) answers ``truth``."""
        if kind == "closed":
            got = parse_closed(parsed) if parsed else parse_closed(output)
            return got is not None and got == parse_closed(truth)
        if kind == "choice":
            got = (parsed or "").strip().upper()[:1] or parse_choice(output, options or {})
            want = truth.strip().upper()
            if want not in {k.upper() for k in (options or {})}:
                want = parse_choice(truth, options or {}) or want
            return got == want
        text = parsed if parsed else output
        pred, gold = normalize(text), normalize(truth)
        if not gold:
            return False
        if pred == gold or token_f1(pred, gold) >= self.f1_threshold:
            return True
        tokens = pred.split()
        return len(tokens) <= self.contains_max_tokens and f" {gold} " in f" {pred} "

    def describe(self) -> dict[str, object]:
        """The judge's settings, for the run manifest."""
        return {"closed": "first yes/no/maybe word equals the truth's",
                "choice": "chosen option letter equals the truth's",
                "open": f"normalised exact match, token F1 >= {self.f1_threshold}, or the truth "
                        f"as a phrase in an output of <= {self.contains_max_tokens} tokens"}
