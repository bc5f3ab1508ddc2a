"""Per-module gradient statistics while a transformers Trainer trains, every N optimizer steps.

    python examples/transformers_monitor.py

A tiny GPT-2, built from a config (nothing is downloaded), trains for a few
optimizer steps on the CPU on random tokens, two micro-batches per step and
gradients clipped to a norm of 0.5. torchwalk's StatsCallback samples the
clipped gradients (and AdamW's moments) of each of the model's blocks every 2
optimizer steps, and logs their L2 norm, largest magnitude, mean, std,
fraction of zeros and count of non-finite values through the Trainer: into
its log history and to every ``report_to`` integration. The logged steps'
total norms are printed at the end, beside the Trainer's own ``grad_norm``
(measured before clipping), then the last step's norms per block.
"""

from __future__ import annotations

import tempfile

import torch
from torchwalk.integrations.transformers import StatsCallback
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PrinterCallback,
    Trainer,
    TrainingArguments,
)
from transformers.utils import logging


def main() -> None:
    logging.set_verbosity_error()  # the Trainer's advice about its settings
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=128, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config)
    tokens = torch.randint(0, config.vocab_size, (64, 32))
    data = [{"input_ids": row, "labels": row} for row in tokens]
    with tempfile.TemporaryDirectory() as folder:
        arguments = TrainingArguments(
            output_dir=folder,
            max_steps=6,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            max_grad_norm=0.5,
            learning_rate=1e-3,
            logging_steps=2,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=data)
        trainer.remove_callback(PrinterCallback)  # it would print every log entry, whole
        StatsCallback(every=2, depth=3, optimizer_states=True).attach(trainer)
        trainer.train()
    history = trainer.state.log_history
    figures = [entry for entry in history if "grad/total/l2" in entry]
    grad_norms = {entry["step"]: entry["grad_norm"] for entry in history if "grad_norm" in entry}
    print(f"{len(figures)} logged steps:")
    for entry in figures:
        step = entry["step"]
        print(
            f"  step {step}: grad_norm {grad_norms[step]:.4g} before clipping, "
            f"grad/total/l2 {entry['grad/total/l2']:.4g} after"
        )
    print(f"step {figures[-1]['step']}, per block:")
    for key, value in sorted(figures[-1].items()):
        if key.endswith("/l2") and "/total/" not in key:
            print(f"  {key:32s} {value:.4g}")


if __name__ == "__main__":
    main()
