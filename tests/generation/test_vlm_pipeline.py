"""A transformers vision-language model answers through ``Pipeline`` with the real image in its
messages: a tiny LLaVA (1-layer CLIP vision tower + 2-layer Llama, random weights, tokenizer and
processor built offline) is taught, in the test, to answer "yes [1]" for a red scan and "no [2]"
for a black one *with the same retrieved evidence*, so the answers can only differ if the image
reaches the model. The pipeline then retrieves from an index, builds the prompt, generates with
the image, parses the answer and marks the cited evidence."""

from __future__ import annotations

from pathlib import Path

import pytest
from tinymodels import CHAT, save_tiny_llava, word_tokenizer

from mmedrag.config import Component, Config
from mmedrag.pipeline import Pipeline

QUESTION = "Is there a lesion in this scan?"


def _tiny_llava(folder: Path, words: list[str]) -> Path:
    tokenizer, vocab = word_tokenizer(words, whitespace=True,
                                      extra_special=["<user>", "<assistant>", "<system>",
                                                     "<image>"])
    tokenizer._tokenizer.post_processor = None  # the chat template places </s> itself
    tokenizer.chat_template = CHAT
    return save_tiny_llava(folder, tokenizer, vocab, CHAT, bos_token_id=3,
                           max_position_embeddings=4096)


def _teach(generator, lessons: list[tuple[list[dict], object, str]], steps: int = 300) -> float:  # noqa: ANN001
    """Fit the model to answer each (messages, image) with its target: plain next-token loss on
    the answer tokens, through the generator's own prompt building."""
    import torch

    model, processor = generator.load()
    tokenizer = processor.tokenizer
    batches = []
    for messages, image, target in lessons:
        inputs = generator._inputs(messages, [image])
        answer = tokenizer(target, add_special_tokens=False, return_tensors="pt")["input_ids"]
        answer = torch.cat([answer, torch.tensor([[tokenizer.eos_token_id]])], dim=1)
        ids = torch.cat([inputs["input_ids"], answer], dim=1)
        labels = torch.full_like(ids, -100)
        labels[:, inputs["input_ids"].shape[1]:] = answer
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                        "pixel_values": inputs["pixel_values"], "labels": labels})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        loss = sum(model(**batch).loss for batch in batches) / len(batches)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    model.eval()
    return float(loss.item())


@pytest.mark.slow  # ~50 s of CPU: the tiny model is taught for up to 300 steps
def test_transformers_vlm_sees_the_image_and_cites_evidence(hashing_index, sample_dir: Path,  # noqa: ANN001
                                                            tmp_path: Path) -> None:
    from PIL import Image

    from mmedrag.generation.transformers_local import TransformersGenerator

    red = Image.new("RGB", (64, 64), (220, 30, 30))
    black = Image.new("RGB", (64, 64), (0, 0, 0))
    retrieval_image = sample_dir / "images" / "synpic19605.jpg"
    config = Config(generator=Component(name="transformers"))
    config.retrieval.k = 4
    config.selector = Component(name="fixed", options={"k": 2})
    texts = [r.text for r in hashing_index.text_store.iter_records()]
    folder = _tiny_llava(tmp_path / "llava", [*texts, QUESTION, "yes no [1] [2]"])
    generator = TransformersGenerator(str(folder))
    assert generator.sees_images
    pipe = Pipeline(config, hashing_index, generator=generator, evidence_chars=60)

    def ask(image):  # noqa: ANN001, ANN202
        return pipe.answer(QUESTION, image=image, task="closed_vqa",
                           retrieval_image=retrieval_image)

    first = ask(red)
    assert first.image_seen and len(first.evidence) == 2
    # the same evidence for both images: only the image can tell the answers apart
    assert [e.hit.id for e in ask(black).evidence] == [e.hit.id for e in first.evidence]
    loss = _teach(generator, [(first.messages, red, "yes [1]"),
                              (first.messages, black, "no [2]")])
    assert loss < 0.05, loss

    seen_red, seen_black = ask(red), ask(black)
    for answer, parsed, cited in ((seen_red, "yes", 1), (seen_black, "no", 2)):
        assert answer.image_seen and answer.used_rag
        assert answer.text == f"{parsed} [{cited}]" and answer.parsed == parsed
        assert [e.number for e in answer.evidence if e.cited] == [cited]
        assert answer.tokens_in > 50 and answer.tokens_out == 2  # "yes" "[1]"
        # the prompt was built for a model that sees the image
        assert "The medical image is attached." in answer.messages[-1]["content"]
    # a text-only turn of the same model: no image, so nothing is marked seen
    blind = pipe.answer(QUESTION, task="closed_vqa", use_rag=False)
    assert not blind.image_seen
