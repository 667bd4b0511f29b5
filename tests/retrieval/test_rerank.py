"""Rerankers: a real (tiny, self-built) sentence-transformers CrossEncoder, MMR, identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmedrag.errors import MmedragError, UsageError
from mmedrag.records import Hit, Query, Record
from mmedrag.registry import REGISTRY
from mmedrag.retrieval.dense import DenseRetriever
from mmedrag.retrieval.rerank import CrossEncoderReranker, MMRReranker, mmr_order

WORDS = ["pleural", "effusion", "fluid", "lung", "fracture", "bone", "rib", "heart", "normal",
         "large", "small", "left", "right", "the", "a", "is", "there", "no", "with"]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT sequence classifier with its own WordPiece vocab."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-ce")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)
    assert tokenizer("pleural rib").input_ids[1:3] == [5 + WORDS.index("pleural"),
                                                       5 + WORDS.index("rib")]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        num_labels=1, initializer_range=0.5)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def direct_scores(folder: Path, question: str, passages: list[str]) -> np.ndarray:
    """The model's logits computed with plain transformers (independent of the reranker)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = tokenizer([question] * len(passages), passages, padding=True, truncation=True,
                      return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].numpy()


def make_hits(texts: list[str]) -> list[Hit]:
    return [Hit(Record(id=f"h{i}", text=t), score=1.0 - i / 10, retriever="dense", rank=i + 1)
            for i, t in enumerate(texts)]


def test_cross_encoder_reorders_by_model_scores(tiny_cross_encoder: Path) -> None:
    passages = ["large left pleural effusion", "rib fracture", "normal heart", "no fluid",
                "small right effusion with fluid", "bone is normal"]
    question = "is there a pleural effusion"
    expected = direct_scores(tiny_cross_encoder, question, passages)
    # hand the hits over in the model's worst-first order so a correct reranker must reorder
    worst_first = [passages[i] for i in np.argsort(expected)]
    reranker = REGISTRY.create("reranker", "cross-encoder", model=str(tiny_cross_encoder))
    out = reranker.rerank(Query(text=question), make_hits(worst_first), k=4)
    assert [h.record.text for h in out] == [passages[i] for i in np.argsort(-expected)[:4]]
    assert [h.rank for h in out] == [1, 2, 3, 4]
    sigmoid = 1 / (1 + np.exp(-np.sort(expected)[::-1][:4]))  # CrossEncoder's default activation
    assert [h.score for h in out] == pytest.approx(sigmoid.tolist(), abs=1e-4)
    assert out[0].details["rerank"]["rank_before"] == 6 and out[0].retriever == "dense"
    config = reranker.config()
    assert config["name"] == "cross-encoder"
    assert config["options"]["model"] == str(tiny_cross_encoder)


def test_cross_encoder_leaves_image_only_queries_alone(tiny_cross_encoder: Path) -> None:
    hits = make_hits(["a", "b", "c"])
    out = CrossEncoderReranker(str(tiny_cross_encoder)).rerank(Query(image="x.png"), hits, k=2)
    assert [h.id for h in out] == ["h0", "h1"]


def test_cross_encoder_missing_model_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MmedragError, match="cannot load cross-encoder") as info:
        CrossEncoderReranker(str(tmp_path / "no-such-model"))
    assert "\n" not in str(info.value)


def test_mmr_order_demotes_duplicates() -> None:
    vectors = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    relevance = np.array([0.9, 0.89, 0.6, 0.3])
    assert mmr_order(relevance, vectors, 4, 1.0)[0] == [0, 1, 2, 3]
    assert mmr_order(relevance, vectors, 4, 0.5)[0] == [0, 2, 3, 1]


def test_mmr_reranker_on_an_index(hashing_index) -> None:  # noqa: ANN001
    query = Query(text="pleural effusion in the chest")
    hits = DenseRetriever(hashing_index, exact=True).retrieve(query, 8)
    reranker = REGISTRY.create("reranker", "mmr", index=hashing_index, lambda_mult=1.0)
    assert np.allclose(reranker.vectors(hits[:2]), hashing_index.text_store.vectors(
        [h.id for h in hits[:2]]))
    assert [h.id for h in reranker.rerank(query, hits, k=8)] == [h.id for h in hits]
    duplicate = Hit(Record(id="copy", text=hits[0].record.text), score=hits[0].score - 1e-6)
    diverse = MMRReranker(hashing_index, lambda_mult=0.5).rerank(
        query, [hits[0], duplicate, *hits[1:]], k=4)
    assert [h.id for h in diverse][:1] == [hits[0].id] and "copy" not in [h.id for h in diverse]
    assert MMRReranker(hashing_index).config() == {"name": "mmr", "options": {"lambda_mult": 0.7}}
    with pytest.raises(UsageError, match="lambda_mult"):
        MMRReranker(hashing_index, lambda_mult=2)


def test_identity_reranker_truncates_and_renumbers() -> None:
    hits = make_hits(["a", "b", "c"])
    out = REGISTRY.create("reranker", "none").rerank(Query(text="q"), hits[1:], k=1)
    assert [(h.id, h.rank) for h in out] == [("h1", 1)]
