"""Fine-tuning a transformers CLIP as the image→report retriever, registering it with an index,
and using it through the one retrieval flow (``eval retrieval``, ``search``): a tiny random
``CLIPModel`` built offline in the test, on the packaged 36-pair sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tinymodels import tiny_hf_clip, write_split_sample

from mmedrag.cli.main import main
from mmedrag.errors import IndexMismatchError


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def split_sample(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample with a split field: 4 of each domain's 12 pairs are dev (a by-case split:
    every sample pair is its own case)."""
    return write_split_sample(sample_dir, tmp_path_factory.mktemp("split"))


@pytest.fixture(scope="module")
def clip_dir(split_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [json.loads(line)["text"] for line in split_sample.read_text().splitlines()]
    return tiny_hf_clip(tmp_path_factory.mktemp("clip") / "tiny-clip", texts)


def _dev_index(manifest: Path, folder: Path) -> Path:
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest

    index = Index.open(folder, create=True,
                       config=IndexConfig(text_encoder=Component(name="hashing")))
    records = [r for r in read_manifest(manifest).records if r.meta.get("split") == "dev"]
    index.add(records)
    index.close()
    return folder


def test_hf_clip_finetunes_registers_and_serves_eval_and_search(
        split_sample: Path, clip_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModel

    from mmedrag.encoders.dual import DualEncoder
    from mmedrag.index import Index

    index = _dev_index(split_sample, tmp_path / "idx")
    out = tmp_path / "ft"
    args = ["train", "retriever", str(split_sample), "--model", f"hf:{clip_dir}", "--out",
            str(out), "--split-field", "split", "--epochs", "3", "--batch-size", "8", "--lr",
            "1e-3", "--monitor", "MRR", "--index", str(index), "--json"]
    assert main(args) == 0
    summary = _json(capsys)
    assert summary["library"] == "transformers"
    assert (summary["train_pairs"], summary["val_pairs"]) == (24, 12)
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2, 3]
    # 24 training pairs fit (the loss falls); validation recall rising above the untrained
    # model's is shown on MedPix (test_medpix_dual.py), not on 12 sample reports
    losses = [h["loss"] for h in summary["history"][1:]]
    assert losses[-1] < losses[0] and set(summary["untrained"]) == set(summary["val"])
    assert summary["text_store"]["added"] == 12 and summary["registered"] == str(index)

    # saved in its own library's format: transformers loads it without mmedrag
    reloaded = AutoModel.from_pretrained(out / "model")
    assert type(reloaded).__name__ == "CLIPModel"
    meta = json.loads((out / "mmedrag.json").read_text())
    assert meta["best_epoch"] == summary["best_epoch"] and meta["library"] == "transformers"

    # registered as a dual tower with its own text store, at query time outside training/
    artefact = Index.open(index).artefacts.towers[0]
    assert artefact.kind == "dual" and artefact.text_store and artefact.domain is None
    assert (index / artefact.text_store / "source.json").exists()

    # eval retrieval goes through the flow and the tower, and gives the validation figures
    code = main(["eval", "retrieval", str(split_sample), "--index", str(index),
                 "--split-field", "split", "--split", "dev", "--json"])
    assert code == 0
    result = _json(capsys)
    assert result["retriever"] == "image-text" and result["queries"] == 12
    for name, value in summary["val"].items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-3), name

    # search (the same flow) says which tower it used, and ranks like the raw model does
    dev = [json.loads(line) for line in split_sample.read_text().splitlines()
           if '"dev"' in line]
    image = str(split_sample.parent / dev[0]["image"])
    assert main(["search", "--index", str(index), "--image", image, "-k", "12", "--json"]) == 0
    found = _json(capsys)
    assert any("fine-tuned dual encoder" in step for step in found["trace"])
    # ask answers with evidence from the same tower
    assert main(["ask", "--index", str(index), "--image", image, "-g", "echo", "--json",
                 "What is shown?"]) == 0
    answer = _json(capsys)
    assert any("fine-tuned dual encoder" in step for step in answer["trace"])
    encoder = DualEncoder(out)
    scores = encoder.encode_images([image]) @ \
        encoder.encode_texts([r["text"] for r in dev]).T
    expected = [dev[i]["id"] for i in np.argsort(-scores[0], kind="stable")]
    assert [h["id"] for h in found["hits"]][:3] == expected[:3]


def test_hf_clip_resumes_and_trains_per_domain(split_sample: Path, clip_dir: Path,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from mmedrag.index import Index

    index = _dev_index(split_sample, tmp_path / "idx")
    base = ["train", "retriever", str(split_sample), "--model", f"hf:{clip_dir}",
            "--split-field", "split", "--batch-size", "4", "--lr", "1e-3",
            "--domain", "CHEST", "--index", str(index), "--json"]
    assert main([*base, "--out", str(tmp_path / "chest"), "--epochs", "1"]) == 0
    first = _json(capsys)
    assert (first["train_pairs"], first["val_pairs"]) == (8, 4)
    assert main([*base, "--out", str(tmp_path / "chest"), "--epochs", "2", "--resume"]) == 0
    resumed = _json(capsys)
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2]
    assert resumed["history"][1] == first["history"][1]  # epoch 1 was not run again
    towers = Index.open(index).artefacts.towers
    assert [(t.domain, t.kind) for t in towers] == [("CHEST", "dual")]
    # a caller-fixed domain picks the CHEST tower; its store is filtered to the domain
    dev_chest = [json.loads(line) for line in split_sample.read_text().splitlines()
                 if '"dev"' in line and '"CHEST"' in line]
    image = str(split_sample.parent / dev_chest[0]["image"])
    assert main(["search", "--index", str(index), "--image", image, "--domain", "CHEST",
                 "-k", "10", "--json"]) == 0
    found = _json(capsys)
    assert any("CHEST tower (fine-tuned dual encoder)" in step for step in found["trace"])
    assert {h["id"] for h in found["hits"]} == {r["id"] for r in dev_chest}


def test_dual_text_store_follows_the_index(split_sample: Path, clip_dir: Path,
                                           tmp_path: Path) -> None:
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest
    from mmedrag.retrieval.image_text import ImageToTextRetriever, register_dual_tower
    from mmedrag.training.clip_finetune import ClipTrainConfig, finetune_dual

    out = tmp_path / "ft"
    finetune_dual(split_sample, out, f"hf:{clip_dir}", split_field="split", progress=False,
                  config=ClipTrainConfig(epochs=1, batch_size=8))
    folder = _dev_index(split_sample, tmp_path / "idx")
    index = Index.open(folder)
    counts = register_dual_tower(index, out, progress=False)
    assert (counts["added"], counts["removed"]) == (12, 0)
    store = index.artefacts.towers[0].text_store
    train = [r for r in read_manifest(split_sample).records if r.meta["split"] == "train"]
    index.add(train[:3])
    index.delete([train[0].id])
    index.close()
    # a read-only index (the server) refuses a stale store in one line
    with pytest.raises(IndexMismatchError, match="has 12 records, the index 14"):
        ImageToTextRetriever(Index.open(folder, read_only=True), _encoder(out), store)
    # a writable one catches up: the two new records are embedded, the deleted one never was
    retriever = ImageToTextRetriever(Index.open(folder), _encoder(out), store)
    assert retriever.store.count() == 14
    assert retriever.store.has([train[0].id, train[1].id]) == {train[1].id}
    retriever.index.close()
    # once caught up, a read-only index (the server) serves the tower as it is
    from mmedrag.records import Query

    served = ImageToTextRetriever(Index.open(folder, read_only=True), _encoder(out), store)
    image = sorted((split_sample.parent / "images").iterdir())[0]
    hits = served.retrieve(Query(image=str(image)), k=14)
    assert len(hits) == 14 and {h.retriever for h in hits} == {"image-text"}


def _encoder(path: Path):  # noqa: ANN202
    from mmedrag.encoders.dual import DualEncoder

    return DualEncoder(path)


@pytest.mark.parametrize(("extra", "message"), [
    (["--model", "bogus"], "expected tower, hf:ID_OR_PATH"),
    (["--model", "hf:./no/such/folder"], "no such model folder"),
    (["--model", "hf:x", "--size", "32"], "--size applies to --model tower only"),
    (["--model", "hf:x", "--pretrained", "openai"], "applies to open_clip architecture names"),
    (["--pretrained", "openai"], "--pretrained applies to --model open_clip:ARCH only"),
    (["--monitor", "R@1"], "apply to dual encoders"),
    (["--model", "hf:x", "--monitor", "R@3"], "monitor 'R@3'"),
])
def test_bad_dual_settings_are_refused_in_one_line(split_sample: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   extra: list[str], message: str) -> None:
    code = main(["train", "retriever", str(split_sample), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_not_a_dual_encoder_is_named(split_sample: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, vocab_size=50)).save_pretrained(tmp_path / "bert")
    capsys.readouterr()
    code = main(["train", "retriever", str(split_sample), "--out", str(tmp_path / "o"),
                 "--model", f"hf:{tmp_path / 'bert'}"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # above it: transformers' own loading bar
    assert code == 1 and "(BertModel) is not a dual encoder: it has no get_image_features" in last
