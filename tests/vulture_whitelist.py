"""Names vulture cannot see used: called by transformers, ipywidgets, PyAV or Python itself, not by our code.
Checked by tests/test_foundation.py::test_no_dead_code."""

# ruff: noqa
from mmduet_core.interactive import explorer, widgets
from mmduet_core.model import checkpoint, modeling, template
from mmduet_core.reports import notebooks
from mmduet_core.stream import cache
from mmduet_core.training import trainer

modeling.DuetModel.config_class  # transformers reads it when loading
cache.DuetCache.layer_class_to_replicate  # transformers' Cache grows layers from it
trainer.LossHistory.on_log  # a TrainerCallback hook
trainer.DuetTrainer.compute_loss  # overrides Trainer.compute_loss
trainer.DuetTrainer.model_accepts_loss_kwargs  # read by Trainer
_.num_items_in_batch  # Trainer.compute_loss's signature
_.padding_side, _.chat_template, _.pre_tokenizer  # tokenizer attributes transformers / tokenizers read
_.continuous_update, _.icon  # ipywidgets traits
_.thread_type, _.thread_count, _.pix_fmt  # PyAV stream attributes
_.exclude_input_prompt, _.exclude_output_prompt  # nbconvert exporter traits
_.encode_seconds, _.processes  # RunSummary fields reported in the JSON summary
__getattr__  # module-level lazy exports (PEP 562)
