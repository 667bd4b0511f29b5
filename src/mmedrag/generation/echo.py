"""A deterministic rule-based generator FOR TESTS AND DEVELOPMENT ONLY (no model at all).

It reads the numbered evidence lines (``[n] text``) in the last user message and answers by
rule, so pipeline logic (retrieval → prompt → parse → citations) can be tested in
milliseconds with exact expectations:

- closed questions: "yes" when the first evidence holds more yes-words than no-words, else
  "no"; ``yes_probability`` = (yes + 1) / (yes + no + 2) over that evidence (0.5 without any);
- multiple choice: the option whose words overlap most with all the evidence (ties → first);
- open questions / reports: the first sentence of the first evidence.

Every answer with evidence cites ``[1]``. Without evidence it answers "unknown" (closed: "no")
with low confidence, which makes retrieve-on-demand fall through to retrieval.

Example:
    >>> gen = EchoGenerator()
    >>> msgs = [{"role": "user",
    ...          "content": "[1] A: Yes. Yes.\\nQuestion: Is it?\\nAnswer yes or no"}]
    >>> gen.generate(msgs).text
    'yes [1]'
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from mmedrag.generation.protocol import GenerationParams
from mmedrag.records import Generation

_EVIDENCE = re.compile(r"^\[(\d+)\]\s*(.*)$", re.MULTILINE)
_OPTION = re.compile(r"^([A-J])\.\s+(.*)$", re.MULTILINE)
_WORD = re.compile(r"[a-z0-9]+")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content", "")
            if isinstance(content, list):
                return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
            return str(content)
    return ""


class EchoGenerator:
    """Rule-based stand-in for a model; see the module docstring. Never use it for real answers.

    Example:
        >>> EchoGenerator().generate([{"role": "user", "content": "Question: hi"}]).text
        'unknown'
    """

    sees_images = False

    def __init__(self, name: str = "echo", sees_images: bool = False) -> None:
        self.name = name
        self.model = name
        self.sees_images = sees_images

    def generate(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
                 params: GenerationParams | None = None) -> Generation:
        start = time.perf_counter()
        prompt = _last_user_text(messages)
        evidence = [text for _, text in _EVIDENCE.findall(prompt)]
        options = dict(_OPTION.findall(prompt))
        closed = '"yes" or "no"' in prompt or "yes or no" in prompt.lower()
        yes_probability = None
        if options:
            text = self._choose(options, evidence)
        elif closed:
            yes_probability = self._yes_probability(evidence[0] if evidence else "")
            text = "yes" if yes_probability > 0.5 else "no"
        elif evidence:
            text = re.split(r"(?<=[.!?])\s+", evidence[0].strip(), maxsplit=1)[0]
        else:
            text = "unknown"
        if evidence:
            text += " [1]"
        words_in = sum(len(str(m.get("content", "")).split()) for m in messages)
        confidence = 0.9 if evidence else 0.2
        return Generation(text=text, tokens_in=words_in, tokens_out=len(text.split()),
                          seconds=time.perf_counter() - start,
                          logprobs=[math.log(confidence)] * len(text.split()),
                          yes_probability=yes_probability, model=self.name)

    @staticmethod
    def _yes_probability(evidence: str) -> float:
        words = _WORD.findall(evidence.lower())
        yes, no = words.count("yes"), words.count("no")
        return (yes + 1) / (yes + no + 2)

    @staticmethod
    def _choose(options: dict[str, str], evidence: list[str]) -> str:
        pool = set(_WORD.findall(" ".join(evidence).lower()))
        best, best_overlap = next(iter(options)), -1
        for letter, text in options.items():
            overlap = len(set(_WORD.findall(text.lower())) & pool)
            if overlap > best_overlap:
                best, best_overlap = letter, overlap
        return f"Answer: {best}"
