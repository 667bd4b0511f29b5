"""Robust parsing of free-text model answers: yes/no, option letters (A–J) and citations [n].

Small models rarely follow the requested format exactly, so every parser looks first for an
explicit answer marker ("Answer: B", "The answer is (B)") and then falls back to weaker cues.

Example:
    >>> parse_yes_no("Based on [2], the answer is no.")
    'no'
    >>> parse_option("I think the correct choice is option b, because ...")
    'B'
    >>> parse_citations("Effusion [1][3] and edema [2, 3].")
    [1, 3, 2]
"""

from __future__ import annotations

import re

LETTERS = "ABCDEFGHIJ"

_MARKER = r"(?:final\s+answer|correct\s+(?:answer|option|choice)|answer|choice)"
_YES_WORDS = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
_YES_NO = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
_MARKED_YES_NO = re.compile(_MARKER + r"\s*(?:is|would\s+be|:|-|=)?\s*[:\-]?\s*[\"'(*]*\s*"
                            r"(yes|no|true|false)\b", re.IGNORECASE)
_CITATION = re.compile(r"\[(\s*\d+\s*(?:(?:,|;|-|–)\s*\d+\s*)*)\]")


def parse_yes_no(text: str) -> str | None:
    """``"yes"``, ``"no"`` or None: the marked answer if any, else the first yes/no word.

    Example:
        >>> parse_yes_no("Yes, there is a fracture.")
        'yes'
    """
    if not text:
        return None
    marked = _MARKED_YES_NO.search(text)
    if marked:
        return _YES_WORDS[marked.group(1).lower()]
    found = _YES_NO.search(text)
    return _YES_WORDS[found.group(1).lower()] if found else None


def _letter_class(letters: str) -> str:
    return "[" + letters + letters.lower() + "]"


def parse_option(text: str, letters: str = LETTERS, options: dict[str, str] | None = None
                 ) -> str | None:
    """The chosen option letter (upper case) or None.

    Order of cues: an answer marker ("answer is (B)", "Answer: C) ..."), "option b", a letter
    alone or leading a line ("B.", "(B)", "C) text"), and finally, when ``options`` are given,
    the one option whose text alone appears in the answer.

    Example:
        >>> parse_option("answer: C) Pneumonia")
        'C'
    """
    if not text:
        return None
    if options:
        letters = "".join(k.upper() for k in options if len(k) == 1 and k.isalpha()) or letters
    cls = _letter_class(letters)
    patterns = [
        _MARKER + r"\s*(?:is|would\s+be)?\s*[:\-=]?\s*(?:option\s+)?[\"'(\[*]*\s*(" + cls +
        r")(?![A-Za-z])",
        r"\b(?:option|choice)\s*[\"'(\[]?(" + cls + r")(?![A-Za-z])",
        r"(?:^|\n)\s*[\"'(\[*]*(" + cls + r")\s*(?:[.):\]]|$)",
        r"\((" + cls + r")\)",
        r"^\s*(" + cls + r")\s*$",
    ]
    for index, pattern in enumerate(patterns):
        flags = re.MULTILINE if index == 2 else 0
        if index == 0 or index == 1:
            flags |= re.IGNORECASE
        found = re.search(pattern, text, flags)
        if found and (index != 0 or _not_article(text, found)):
            return found.group(1).upper()
    if options:
        return _option_by_text(text, options)
    return None


def _not_article(text: str, found: re.Match[str]) -> bool:
    """Reject "the answer is a fracture": a lower-case 'a' followed by a word is an article."""
    letter = found.group(1)
    rest = text[found.end():]
    return not (letter == "a" and re.match(r"\s+[A-Za-z]", rest))


def _option_by_text(text: str, options: dict[str, str]) -> str | None:
    """The one option whose text appears in the answer as whole words ("no" is not in "not")."""
    lowered = text.lower()
    present = [k.upper() for k, v in options.items() if v and v.strip() and re.search(
        r"(?<!\w)" + re.escape(v.strip().lower()) + r"(?!\w)", lowered)]
    return present[0] if len(present) == 1 else None


def parse_verified_option(text: str, options: dict[str, str] | None = None) -> str | None:
    r"""Verification-of-Choice answers: the final "Answer: X" if present, else the one option
    verified as correct ("B: correct", "Option C is correct").

    Example:
        >>> parse_verified_option("A: incorrect, no mass [1].\nB: correct, effusion [2].")
        'B'
    """
    letters = "".join(k.upper() for k in options) if options else LETTERS
    cls = _letter_class(letters)
    marked = re.search(_MARKER + r"\s*(?:is|would\s+be)?\s*[:\-=]\s*[\"'(\[*]*\s*(" + cls +
                       r")(?![A-Za-z])", text or "", re.IGNORECASE)
    if marked:
        return marked.group(1).upper()
    verdict = re.compile(r"(?:^|\n)\s*(?:option\s+)?[(\[]?(" + cls + r")[)\]]?\s*(?::|-|is)\s*"
                         r"(correct|incorrect|true|false|wrong)\b", re.IGNORECASE)
    correct = [m.group(1).upper() for m in verdict.finditer(text or "")
               if m.group(2).lower() in ("correct", "true")]
    if len(set(correct)) == 1:
        return correct[0]
    return parse_option(text, letters, options) if not correct else None


def parse_citations(text: str) -> list[int]:
    """Cited evidence numbers in order of first appearance: [1], [1][2], [1, 3], [2-4].

    Example:
        >>> parse_citations("see [2-4] and [1]")
        [2, 3, 4, 1]
    """
    seen: list[int] = []
    for group in _CITATION.findall(text or ""):
        for part in re.split(r"[,;]", group):
            bounds = re.split(r"[-–]", part)
            numbers = [int(b) for b in bounds if b.strip()]
            if len(numbers) == 2 and 0 < numbers[1] - numbers[0] <= 50:
                numbers = list(range(numbers[0], numbers[1] + 1))
            for number in numbers:
                if number not in seen:
                    seen.append(number)
    return seen


_NEGATIVE = re.compile(
    r"\b(no|not|without|absent|negative|none|neither|nor|normal|unremarkable|rules? out|"
    r"ruled out|free of|lack of|lacks?)\b", re.IGNORECASE)
_AFFIRMATIVE = re.compile(
    r"\b(there (?:is|are)|evidence of|shows?|showing|demonstrates?|present|consistent with|"
    r"suggestive of|seen|visible|identified|noted|positive|indicates?)\b", re.IGNORECASE)


def closed_text_polarity(text: str) -> str | None:
    """How a closed answer without a yes/no word reads: ``"no"`` when its first sentence
    negates, ``"yes"`` when it asserts a finding, None when it does neither.

    Example:
        >>> closed_text_polarity("There is evidence of a pneumoperitoneum.")
        'yes'
        >>> closed_text_polarity("The lungs are clear without effusion.")
        'no'
    """
    sentence = first_sentence(text) or ""
    if _NEGATIVE.search(sentence):
        return "no"
    return "yes" if _AFFIRMATIVE.search(sentence) else None


def parse_answer(task: str, text: str, options: dict[str, str] | None = None) -> str | None:
    """The task's parsed answer: yes/no, an option letter, or the first sentence for open tasks.

    Example:
        >>> parse_answer("closed_vqa", "No [1].")
        'no'
    """
    if task == "closed_vqa":
        return parse_yes_no(text)
    if task == "mcq_voc":
        return parse_verified_option(text, options=options)
    if task == "mcq":
        return parse_option(text, options=options)
    return first_sentence(text)


def first_sentence(text: str) -> str | None:
    """The answer's first sentence with citations and an "Answer:" prefix removed."""
    cleaned = _CITATION.sub("", text or "").strip()
    cleaned = re.sub(r"^\s*(?:final\s+)?answer\s*[:\-]\s*", "", cleaned, flags=re.IGNORECASE)
    if not cleaned:
        return None
    sentence = re.split(r"(?<=[.!?])\s+|\n", cleaned, maxsplit=1)[0].strip()
    return sentence.rstrip(" .") or None
