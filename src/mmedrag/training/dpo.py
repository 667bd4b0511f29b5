"""RAG-PT preference fine-tuning: TRL's DPOTrainer with a PEFT LoRA adapter, in MMed-RAG's
two stages (cross-modality first, then overall alignment) or one mixed stage.

Defaults (:meth:`DPOSettings.paper`) are the MMed-RAG/RULE settings for 7B models: β 0.1, LoRA
r 128 / α 256 / dropout 0.05, learning rate 1e-7, 3 epochs, batch 1, cosine schedule with warm-up
ratio 0.03. :meth:`DPOSettings.cpu_small` is a preset for ~100M-parameter models on a CPU (r 16,
α 32, lr 5e-4, 1 epoch) so a bounded run visibly learns.

The reference model is the base with adapters disabled (TRL does this when ``ref_model=None``
and the policy is a PEFT model). In the second stage the policy is the stage-1 adapter; TRL then
copies it into a frozen ``ref`` adapter, so the stage-2 reference is the stage-1 model, as in
MMed-RAG, where stage 2 starts from the stage-1 checkpoint.

Text-only models cannot see images, so the cross-modality pairs (which differ only in the
image) are left out with a message and the cm stage is skipped. Vision-language models train on
all subsets; cm rows carry ``rejected_images``, which :class:`PerSideImageCollator` feeds to the
rejected side.

Example:
    >>> result = train_dpo("prefs/", "smollm2", "runs/dpo", settings=DPOSettings.cpu_small(),
    ...                    stages="cm,oa", max_steps=20)                        # doctest: +SKIP
    >>> result.stages[-1]["losses"][0], result.stages[-1]["losses"][-1]      # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mmedrag.errors import UsageError
from mmedrag.generation.hf_models import DeviceChoice, load_model, select_device
from mmedrag.preference.dataset import read_pairs, trl_rows

STAGES = {"cm,oa": (("cm", ("cm",)), ("oa", ("oa1", "oa2"))),
          "mixed": (("mixed", ("cm", "oa1", "oa2")),)}


@dataclass
class DPOSettings:
    """DPO and LoRA hyper-parameters (see the module docstring for the two presets)."""

    beta: float = 0.1
    learning_rate: float = 1e-7
    epochs: float = 3.0
    batch_size: int = 1
    grad_accum: int = 1
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    max_length: int | None = 1024
    gradient_checkpointing: bool | None = None  # None: on for GPU, off for CPU
    logging_steps: int = 1
    save_steps: int = 50
    seed: int = 0

    @classmethod
    def paper(cls) -> DPOSettings:
        """MMed-RAG / RULE settings for 7B models."""
        return cls()

    @classmethod
    def cpu_small(cls) -> DPOSettings:
        """A preset for ~100M-parameter models on a CPU (bounded runs that visibly learn)."""
        return cls(learning_rate=5e-4, epochs=1.0, lora_r=16, lora_alpha=32, warmup_ratio=0.0,
                   max_length=768, save_steps=10)

    @classmethod
    def load(cls, path: str | Path | None = None, preset: str = "paper",
             **overrides: Any) -> DPOSettings:
        """A preset (``paper`` | ``cpu-small``), then a YAML/JSON file, then explicit overrides."""
        presets = {"paper": cls.paper, "cpu-small": cls.cpu_small}
        if preset not in presets:
            raise UsageError(f"unknown preset {preset!r}: use paper or cpu-small")
        data = asdict(presets[preset]())
        if path is not None:
            data.update(_read_mapping(Path(path)))
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"{path or 'settings'}: unknown DPO setting {unknown[0]!r} "
                             f"(known: {', '.join(sorted(known))})")
        return cls(**data)


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UsageError(f"{path}: DPO settings file not found")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
    else:
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: DPO settings must be a mapping of name to value")
    return data.get("dpo", data)


@dataclass
class DPOResult:
    """What training produced: per-stage logs, the adapter folder and the merged model folder."""

    out_dir: Path
    adapter_dir: Path | None
    merged_dir: Path | None
    stages: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"


def dpo_config(settings: DPOSettings, out: Path, device: DeviceChoice, max_steps: int | None):
    """TRL ``DPOConfig`` for one stage (mixed precision and checkpointing follow the device)."""
    from trl import DPOConfig

    checkpointing = settings.gradient_checkpointing
    if checkpointing is None:
        checkpointing = device.device.startswith("cuda")
    return DPOConfig(
        output_dir=str(out), beta=settings.beta, learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs, max_steps=max_steps if max_steps else -1,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, lr_scheduler_type=settings.scheduler,
        warmup_steps=settings.warmup_ratio, max_length=settings.max_length,  # < 1: a ratio
        gradient_checkpointing=checkpointing, bf16=device.bf16, fp16=device.fp16,
        use_cpu=device.device == "cpu", logging_steps=settings.logging_steps,
        save_steps=settings.save_steps, save_total_limit=2, report_to="none",
        seed=settings.seed, remove_unused_columns=False, dataloader_num_workers=0,
        disable_tqdm=True)


def lora_config(settings: DPOSettings, vlm: bool):
    """PEFT LoRA config; for VLMs only the language model's linear layers are adapted."""
    from peft import LoraConfig

    target = settings.target_modules
    if vlm and target == "all-linear":
        target = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    return LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout, target_modules=target,
                      bias="none", task_type="CAUSAL_LM")


def _last_checkpoint(folder: Path) -> str | None:
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(checkpoints[-1]) if checkpoints else None


def _run_stage(name: str, model: Any, processor: Any, rows: list[dict[str, Any]], vlm: bool,
               settings: DPOSettings, device: DeviceChoice, out: Path, max_steps: int | None,
               resume: bool, first: bool) -> tuple[Any, dict[str, Any]]:
    from datasets import Dataset
    from trl import DPOTrainer

    from mmedrag.preference.trl_support import LossRecorder, PerSideImageCollator

    stage_dir = out / f"stage-{name}"
    recorder = LossRecorder()
    args = dpo_config(settings, stage_dir, device, max_steps)
    collator = PerSideImageCollator(processor=processor, max_length=settings.max_length) \
        if vlm else None
    trainer = DPOTrainer(model=model, ref_model=None, args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=processor,
                         data_collator=collator,
                         peft_config=lora_config(settings, vlm) if first else None,
                         callbacks=[recorder])
    checkpoint = _last_checkpoint(stage_dir) if resume else None
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    log = {"stage": name, "pairs": len(rows), "steps": trainer.state.global_step,
           "losses": recorder.losses, "resumed_from": checkpoint,
           "seconds": round(time.perf_counter() - start, 1)}
    (stage_dir / "done.json").write_text(json.dumps(log, indent=2))
    policy = trainer.model
    if "ref" in getattr(policy, "peft_config", {}):
        policy.delete_adapter("ref")
        policy.set_adapter("default")
    return policy, log


def train_dpo(data: str | Path, model: str, out_dir: str | Path,
              settings: DPOSettings | None = None, stages: str = "cm,oa",
              gguf_file: str | None = None, max_steps: int | None = None, resume: bool = False,
              merge: bool = False, device: str = "auto") -> DPOResult:
    """Train a LoRA adapter with DPO on RAG-PT pairs; saves ``adapter/`` (and ``merged/``).

    Args:
        data: output folder of ``mmedrag prefs build`` (or a JSONL of TRL rows with ``subset``).
        model: checkpoint folder, ``.gguf`` path, or ``smollm2`` (the packaged GGUF).
        out_dir: where stage checkpoints, ``adapter/``, ``merged/`` and ``train_log.json`` go.
        settings: hyper-parameters (default: the paper's).
        stages: ``cm,oa`` (two stages, MMed-RAG) or ``mixed`` (one stage on everything).
        gguf_file: GGUF file name inside ``model``.
        max_steps: cap on optimizer steps per stage (None: the epochs decide).
        resume: continue from the last checkpoint of an unfinished stage; skip finished ones.
        merge: also save the base model with the adapter merged in.
        device: auto | cpu | cuda[:N].
    """
    if stages not in STAGES:
        raise UsageError(f"unknown stages {stages!r}: use cm,oa or mixed")
    settings = settings or DPOSettings.paper()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    choice = select_device(device)
    pairs = read_pairs(data)
    base = Path(data) if Path(data).is_dir() else Path(data).parent
    policy, processor, vlm = load_model(model, gguf_file, choice)
    result = DPOResult(out, None, None, device=f"{choice.device}/{choice.dtype}")
    first = True
    for name, subsets in STAGES[stages]:
        rows, skipped = trl_rows(pairs, subsets, vision=vlm, base=base)
        for reason, count in skipped.items():
            result.notes.append(f"stage {name}: {count} pair(s) left out: {reason}")
        if not rows:
            result.notes.append(f"stage {name}: no pairs for subsets {', '.join(subsets)}; "
                                "stage skipped")
            continue
        done = out / f"stage-{name}" / "done.json"
        if resume and done.exists() and (out / f"stage-{name}" / "adapter").exists():
            policy = _load_stage_adapter(policy, out / f"stage-{name}" / "adapter")
            result.stages.append(json.loads(done.read_text()) | {"skipped": "already done"})
        else:
            policy, log = _run_stage(name, policy, processor, rows, vlm, settings, choice, out,
                                     max_steps, resume, first)
            policy.save_pretrained(str(out / f"stage-{name}" / "adapter"))
            result.stages.append(log)
        first = False
    if first:
        raise UsageError(f"{data}: no trainable pairs ({'; '.join(result.notes)})")
    result.adapter_dir = out / "adapter"
    policy.save_pretrained(str(result.adapter_dir))
    processor.save_pretrained(str(result.adapter_dir))
    if merge:
        result.merged_dir = out / "merged"
        policy.merge_and_unload().save_pretrained(str(result.merged_dir))
        processor.save_pretrained(str(result.merged_dir))
    _write_log(result, settings, model, gguf_file, stages, data)
    return result


def _load_stage_adapter(policy: Any, adapter: Path) -> Any:
    """The base model (adapters removed, not merged) with a finished stage's adapter."""
    from peft import PeftModel

    if isinstance(policy, PeftModel):
        policy = policy.unload()
    return PeftModel.from_pretrained(policy, str(adapter), is_trainable=True)


def _write_log(result: DPOResult, settings: DPOSettings, model: str, gguf_file: str | None,
               stages: str, data: str | Path) -> None:
    log = {"model": model, "gguf_file": gguf_file, "data": str(data), "stages_mode": stages,
           "device": result.device, "settings": asdict(settings), "stages": result.stages,
           "notes": result.notes, "adapter": str(result.adapter_dir),
           "merged": str(result.merged_dir) if result.merged_dir else None}
    (result.out_dir / "train_log.json").write_text(json.dumps(log, indent=2))
