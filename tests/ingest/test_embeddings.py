"""Bring your own embeddings: ``mmedrag index CORPUS --embeddings FILE`` stores the given
vectors (nothing re-encoded) and refuses a bad file with one line naming it, indexing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmedrag.cli.main import main
from mmedrag.index import Index

CONFIG = "index:\n  text_encoder: {name: hashing}\n  image_encoder: null\n"
N = 60


@pytest.fixture()
def corpus(tmp_path: Path) -> tuple[Path, list[str], np.ndarray]:
    """A corpus, its ids and embeddings made by the index's own encoder (float32, unit rows)."""
    from mmedrag.registry import REGISTRY

    words = "effusion pneumothorax nodule fracture edema mass stenosis infarct".split()
    rows, ids = [], []
    for i in range(N):
        ids.append(f"pmid{i:04d}")
        rows.append({"id": ids[-1], "title": f"t{i}",
                     "content": " ".join(words[(i + j) % 8] for j in range(30)) + f" {i}"})
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    encoder = REGISTRY.create("text_encoder", "hashing")
    # what a user brings: the same model's vectors, scaled (not unit length) and shuffled
    vectors = encoder.encode_texts([r["content"] for r in rows]) * 3.0
    return path, ids, vectors.astype(np.float32)


def _index(tmp_path: Path, corpus_path: Path, *extra: str) -> int:
    return main(["index", str(corpus_path), "--index", str(tmp_path / "idx"), "--kind", "corpus",
                 "--config", str(tmp_path / "cfg.yaml"), "--json", *extra])


def _save(tmp_path: Path, vectors: np.ndarray, ids: list[str], name: str = "emb") -> list[str]:
    np.save(tmp_path / f"{name}.npy", vectors)
    (tmp_path / f"{name}.ids.txt").write_text("\n".join(ids) + "\n")
    return ["--embeddings", str(tmp_path / f"{name}.npy"), "--embedding-ids",
            str(tmp_path / f"{name}.ids.txt"), "--embeddings-model", "hashing"]


def test_precomputed_embeddings_are_stored_not_recomputed(tmp_path, corpus, capsys) -> None:
    path, ids, vectors = corpus
    order = np.random.default_rng(0).permutation(N)  # the file's row order is its own
    marked = vectors.copy()
    marked[:, 0] += 0.25  # a signature the encoder would not produce: proves no re-encoding
    args = _save(tmp_path, marked[order], [ids[i] for i in order])
    assert _index(tmp_path, path, *args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == N and summary["count"] == N
    index = Index.open(tmp_path / "idx")
    expected = marked / np.linalg.norm(marked, axis=1, keepdims=True)
    np.testing.assert_allclose(index.text_store.vectors(ids), expected, atol=1e-6)
    hits = index.text_store.search(expected[7:8], k=1)[0]
    assert hits[0].id == ids[7]
    index.close()
    # resume with the same file adds nothing; the .npz form is accepted too
    np.savez(tmp_path / "e.npz", embeddings=marked, ids=np.array(ids))
    assert _index(tmp_path, path, "--embeddings", str(tmp_path / "e.npz"),
                  "--embeddings-model", "hashing", "--resume") == 0
    assert json.loads(capsys.readouterr().out)["already_indexed"] == N


def _bad(vectors: np.ndarray, ids: list[str], case: str) -> tuple[np.ndarray, list[str], str]:
    if case == "dimension":
        dim = vectors.shape[1]
        return (vectors[:, :-1].copy(), ids,
                f"embeddings are {dim - 1}-d but the index's text encoder (hashing-{dim}) is "
                f"{dim}-d")
    if case == "dtype":
        return vectors.astype(np.float64), ids, "must be float32 or float16, got float64"
    if case == "nan":
        vectors = vectors.copy()
        vectors[17, 3] = np.nan
        return vectors, ids, "(id 'pmid0017') holds NaN or Inf"
    if case == "fewer-rows":
        return vectors[:-5], ids, "55 embedding rows but 60 ids (fewer rows than ids)"
    if case == "unknown-ids":
        return vectors, ids[:-1] + ["pmid9999"], "have no embedding row, e.g. 'pmid0059'"
    assert case == "extra-ids"
    return (np.concatenate([vectors, vectors[:1]]), ids + ["not-in-corpus"],
            "1 embedding id(s) are not in the corpus, e.g. 'not-in-corpus'")


@pytest.mark.parametrize("case", ["dimension", "dtype", "nan", "fewer-rows", "unknown-ids",
                                  "extra-ids"])
def test_bad_embeddings_file_is_one_line_naming_it_and_nothing_is_indexed(
        tmp_path, corpus, capsys, case: str) -> None:
    path, ids, vectors = corpus
    bad, bad_ids, message = _bad(vectors, ids, case)
    args = _save(tmp_path, bad, bad_ids)
    assert _index(tmp_path, path, *args) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(tmp_path / "emb.npy") in err and message in err, err
    assert Index.open(tmp_path / "idx").count() == 0


def test_embeddings_from_another_model_are_refused(tmp_path, corpus, capsys) -> None:
    path, ids, vectors = corpus
    args = _save(tmp_path, vectors, ids)
    args[-1] = "ncbi/MedCPT-Article-Encoder"
    assert _index(tmp_path, path, *args) != 0
    err = capsys.readouterr().err
    assert "made by 'ncbi/MedCPT-Article-Encoder' but the index's text encoder is" in err
    args.pop(), args.pop()  # no model named at all: asked for, not guessed
    assert _index(tmp_path, path, *args) != 0
    assert "give --embeddings-model NAME" in capsys.readouterr().err
    (tmp_path / "emb.json").write_text(json.dumps({"model": "hashing"}))  # or a sidecar
    assert _index(tmp_path, path, *args) == 0


@pytest.mark.parametrize("form", ["npz", "npy-ids"])
def test_ids_saved_as_bytes_are_the_ids_themselves(tmp_path, form: str) -> None:
    """An ids array of dtype bytes (``S``; what h5py and many converters write) holds the ids,
    not their ``repr`` (``"b'pmid1'"``); non-ASCII ids arrive as UTF-8 bytes."""
    from mmedrag.ingest.embeddings import PrecomputedEmbeddings
    from mmedrag.records import Record

    ids = ["pmid1", "ré-2"]
    raw = np.array([i.encode("utf-8") for i in ids])  # dtype S
    vectors = np.eye(2, dtype=np.float32)
    if form == "npz":
        np.savez(tmp_path / "e.npz", embeddings=vectors, ids=raw)
        source = PrecomputedEmbeddings(tmp_path / "e.npz", model="m")
    else:
        np.save(tmp_path / "e.npy", vectors)
        np.save(tmp_path / "ids.npy", raw)
        source = PrecomputedEmbeddings(tmp_path / "e.npy", tmp_path / "ids.npy", model="m")
    records = [Record(id=i, text="t") for i in reversed(ids)]
    source.start(records)
    np.testing.assert_allclose(source.vectors(records), vectors[::-1])


def test_extra_ids_are_found_when_the_corpus_repeats_an_id(tmp_path) -> None:
    """A corpus listing one id twice still has one record for it: an embedding row whose id
    is in no record is refused, not hidden by the repeat."""
    from mmedrag.errors import InputError
    from mmedrag.ingest.embeddings import PrecomputedEmbeddings
    from mmedrag.records import Record

    np.savez(tmp_path / "e.npz", embeddings=np.eye(2, dtype=np.float32),
             ids=np.array(["a", "extra"]))
    source = PrecomputedEmbeddings(tmp_path / "e.npz", model="m")
    with pytest.raises(InputError, match="1 embedding id.*e.g. 'extra'"):
        source.start([Record(id="a", text="t"), Record(id="a", text="t")])
