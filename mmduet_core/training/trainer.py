"""Training MMDuet: LoRA on the 7B recipe (spec §4.9) or full training of a from-scratch toy model.

    mmduet train --config datasets.json --model llava-hf/llava-onevision-qwen2-7b-ov-hf --out outputs/run
    mmduet train --toy                                    # the shipped toy model, about 20 min on 2 CPU cores

What differs from upstream, on purpose: the head labels reach the loss (B1), the heads and the projector are
trained and saved with the LoRA weights (B2), and autocast uses bf16 on GPU instead of fp16 inside bf16
DeepSpeed (B10). The HF Trainer runs it: gradient checkpointing, DeepSpeed ZeRO-2 / accelerate configs for
several GPUs (`configs/`), resume from the last checkpoint, a progress bar, and the LM and head losses
logged separately (`loss_history.json`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..errors import InputError
from ..model import DuetModel
from ..model.checkpoint import OUR_LORA_TARGETS, save_model, tiny_config
from ..model.template import train_tokenizer
from ..run.launch import check_launch, is_main_process
from .streams import DuetCollator, build_mixture, example_lengths

MODULES_TO_SAVE = ["multi_modal_projector", "informative_head", "relevance_head"]


@dataclass
class TrainConfig:
    """Hyper-parameters. Defaults are upstream's 7B recipe (8 GPUs x batch 1 x accumulation 16 = 128)."""

    learning_rate: float = 2e-5
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 1
    grad_accumulation: int = 16
    warmup_ratio: float = 0.05
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    lora: bool = True  # False: train every parameter (the from-scratch toy model)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = True
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 5
    seed: int = 0
    deepspeed: str | None = None  # e.g. configs/deepspeed/zero2.json
    dataloader_workers: int = 0

    def __post_init__(self):
        if self.learning_rate <= 0 or self.batch_size < 1 or self.grad_accumulation < 1:
            raise InputError("learning_rate > 0, batch_size >= 1 and grad_accumulation >= 1 are required")


def prepare_model(model: DuetModel, config: TrainConfig):
    """LoRA with upstream's targets, heads and projector trained and saved; the vision tower frozen. Or, for
    full training, every parameter trainable."""
    if not config.lora:
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    model.model.vision_tower.requires_grad_(False)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=OUR_LORA_TARGETS, modules_to_save=MODULES_TO_SAVE)
    peft_model = get_peft_model(model, lora, autocast_adapter_dtype=False)
    peft_model.base_model.model.model.vision_tower.requires_grad_(False)
    return peft_model


class LossHistory(TrainerCallback):
    """Keeps every logged step (loss, lm_loss, video_loss, lr) and writes loss_history.json (the main process
    only; the losses logged are already averaged over processes)."""

    def __init__(self, out_dir: Path):
        self.out_dir, self.rows = Path(out_dir), []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.rows.append({"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, int | float)}})
            if state.is_world_process_zero:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                (self.out_dir / "loss_history.json").write_text(json.dumps(self.rows, indent=1))


class DuetTrainer(Trainer):
    """Logs the LM loss and the head (video) loss beside the total."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._parts = {"lm_loss": [], "video_loss": []}
        # The model's forward takes **kwargs, so the Trainer would assume it normalises the loss by the tokens of
        # the whole accumulated batch and skip dividing by the accumulation steps; `compute_loss` returns each
        # micro-batch's mean, so it must divide (else gradient accumulation multiplies gradients and logged losses).
        self.model_accepts_loss_kwargs = False

    def _get_train_sampler(self, train_dataset=None):
        """Batches of similar length (less padding) when several examples share a batch. Groups are one global
        batch (all processes, all accumulation steps), so the examples of a step do not depend on how it is
        split over processes: 2 processes x batch B see what 1 process x B with 2 accumulation steps sees."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = example_lengths(dataset)
        if lengths is None or self.args.per_device_train_batch_size == 1:
            return super()._get_train_sampler(train_dataset)
        group = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return LengthGroupedSampler(group, lengths=lengths)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        for key in self._parts:
            value = getattr(outputs, key, None)
            if value is not None:
                self._parts[key].append(float(value.detach()))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs, *args, **kwargs):
        if "loss" in logs:  # a training log: every process is here, so the parts are averaged over processes
            for key, values in self._parts.items():
                if values:
                    local = torch.tensor(sum(values) / len(values), dtype=torch.float64, device=self.args.device)
                    logs[key] = round(float(self.accelerator.reduce(local, reduction="mean")), 4)
                    values.clear()
        super().log(logs, *args, **kwargs)


# transformers renamed gradient_checkpointing to activation_checkpointing (the old name warns, then goes in v6)
CHECKPOINTING = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                 else "gradient_checkpointing")


def train(model: DuetModel, tokenizer, dataset, out_dir: str | Path, config: TrainConfig,
          resume: bool = True, progress: bool = True) -> dict:
    """Train and save (adapter + heads + projector for LoRA; the whole model otherwise). Returns the log.

    Several processes (`accelerate launch --multi_gpu --num_processes N -m mmduet_core train ...`; on a machine
    without GPUs the same command runs N CPU processes over gloo) each take `batch_size` examples per step with
    gradients averaged, so a step sees N x batch_size x grad_accumulation examples; the main process alone writes
    the checkpoint and the loss history.
    """
    check_launch()
    out_dir = Path(out_dir)
    cuda = torch.cuda.is_available()
    net = prepare_model(model, config)
    # a run shorter than one logging interval logs every step (else it would log nothing but the summary)
    logging_steps = 1 if 0 < config.max_steps <= config.logging_steps else config.logging_steps
    args = TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accumulation, learning_rate=config.learning_rate,
        num_train_epochs=config.epochs, max_steps=config.max_steps, lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay, logging_steps=logging_steps,
        save_steps=config.save_steps, save_total_limit=config.save_total_limit, seed=config.seed,
        bf16=cuda and torch.cuda.is_bf16_supported(), tf32=cuda or None,
        **{CHECKPOINTING: config.gradient_checkpointing and cuda,
           f"{CHECKPOINTING}_kwargs": {"use_reentrant": False}}, deepspeed=config.deepspeed,
        dataloader_num_workers=config.dataloader_workers, remove_unused_columns=False, report_to=[],
        disable_tqdm=not progress, use_cpu=not cuda)
    history = LossHistory(out_dir)
    trainer = DuetTrainer(model=net, args=args, train_dataset=dataset,
                          data_collator=DuetCollator(tokenizer, model.frame_num_tokens), callbacks=[history])
    last = _last_checkpoint(out_dir) if resume else None
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if trainer.is_world_process_zero():
        save_model(trainer.model, tokenizer, out_dir / "final")
    trainer.accelerator.wait_for_everyone()  # the checkpoint is complete before any process reads or returns it
    return {"steps": trainer.state.global_step, "history": history.rows, "saved": str(out_dir / "final"),
            "processes": trainer.args.world_size}


def _last_checkpoint(out_dir: Path) -> Path | None:
    checkpoints = sorted(out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return checkpoints[-1] if checkpoints else None


# ---- the toy model ------------------------------------------------------------------------------------------

TOY_MODEL = dict(hidden_size=128, num_layers=4, num_heads=8, num_kv_heads=8, vision_hidden=64, vision_layers=2,
                 image_size=64, patch_size=16, pooling_stride=2)  # 4 tokens per frame; 16 px patches see shapes
TOY_TRAIN = TrainConfig(learning_rate=1e-3, epochs=8, batch_size=16, grad_accumulation=1, warmup_ratio=0.03,
                        lora=False, gradient_checkpointing=False, logging_steps=20, save_steps=200,
                        save_total_limit=2)
TOY_FLASH_STEPS = 800  # stage 1 of `train_toy`: flash cards alone


def build_toy_model(seed: int = 0):
    """A from-scratch MMDuet for the toy world: its own tokenizer, a few hundred thousand parameters."""
    from ..toyworld import toy_vocabulary

    tokens = TOY_MODEL["image_size"] // TOY_MODEL["patch_size"]
    per_frame = math.ceil(tokens / TOY_MODEL["pooling_stride"]) ** 2
    tokenizer = train_tokenizer(toy_vocabulary(), vocab_size=640, frame_num_tokens=per_frame)
    torch.manual_seed(seed)
    config = tiny_config(len(tokenizer), tokenizer.convert_tokens_to_ids("<image>"), **TOY_MODEL)
    return DuetModel(config), tokenizer


def train_toy(world: str | Path, out_dir: str | Path, config: TrainConfig = TOY_TRAIN, seed: int = 0,
              max_steps: int | None = None, progress: bool = True, flash_steps: int = TOY_FLASH_STEPS) -> dict:
    """Train the toy model on a toy world (made by `make_toyworld`) and save the full model.

    Two stages when the world has flash cards: `flash_steps` steps on the flash cards alone, where the relevance
    head learns to compare a frame with the query (on the crossing shapes alone it does not, within a CPU
    budget), then the whole mixture (flash cards included) for `config`'s epochs. The loss history covers both.
    """
    model, tokenizer = build_toy_model(seed)
    world, out_dir = Path(world), Path(out_dir)
    dataset = build_mixture(world / "datasets.json", tokenizer, root=world, frame_size=model.config.vision_config.image_size,
                            frame_num_tokens=model.frame_num_tokens, seed=seed)
    if max_steps is not None:  # caps each stage
        config, flash_steps = replace(config, max_steps=max_steps), min(flash_steps, max_steps)
    flash = [d for d in dataset.datasets if Path(d.video_root).name == "flash"]
    history = []
    if flash and flash_steps > 0 and _last_checkpoint(out_dir) is None:  # a resumed stage 2 has stage 1 in it
        first = train(model, tokenizer, flash[0], out_dir / "stage1-flash", replace(config, max_steps=flash_steps),
                      progress=progress)
        history = [{**row, "stage": "flash cards"} for row in first["history"]]
    result = train(model, tokenizer, dataset, out_dir, config, progress=progress)
    offset = history[-1]["step"] if history else 0
    result["history"] = history + [{**row, "step": row["step"] + offset, "stage": "mixture"} for row in result["history"]]
    if is_main_process():
        (out_dir / "loss_history.json").write_text(json.dumps(result["history"], indent=1))
        (Path(result["saved"]) / "loss_history.json").write_text(json.dumps(result["history"], indent=1))
    result["examples"] = len(dataset)
    return result
