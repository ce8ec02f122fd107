"""Harness defaults shared by every config (memflax.config_presets adds the model and task)."""

from __future__ import annotations

import json

import ml_collections


def harness_config() -> ml_collections.ConfigDict:
  """Fields the training loop, checkpointing and evaluation read (names are stable API)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 32              # global, split evenly over all devices of all hosts
  c.num_train_steps = 2_000
  c.learning_rate = 1e-3
  c.optimizer = 'adam'           # 'adam' | 'rmsprop'
  c.adam_b2 = 0.999
  c.adam_eps = 1e-8              # added to Adam's sqrt(v): bounds steps where gradients are tiny
  c.lr_schedule = 'constant'     # 'constant' | 'cosine' (to learning_rate · lr_final_fraction)
  c.lr_warmup_steps = 0
  c.lr_final_fraction = 0.1
  c.grad_clip_norm = 50.0        # global-norm clip (Collier & Beel 2018); 0 disables
  c.grad_clip_value = 0.0        # element-wise clip (pytorch-ntm uses 10); 0 disables
  c.log_every_steps = 50
  c.eval_every_steps = 250
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.skip_nonfinite_updates = False  # True: a step with NaN/inf is skipped and counted, not fatal
  c.length_buckets = 1             # >1: train on that many padded lengths (memflax/length_buckets.py)
  c.curriculum = ml_collections.ConfigDict()
  c.curriculum.kind = 'fixed'      # 'fixed': the task's whole range | 'grow' (memflax.curriculum)
  c.curriculum.start = 2           # 'grow': first cap on the task's size (e.g. copy's max_length)
  c.curriculum.increment = 1       # raise the cap by this much ...
  c.curriculum.threshold = 1.0     # ... when the running training metric is this good
  c.curriculum.min_steps = 100     # after at least this many steps at the current cap
  c.curriculum.decay = 0.98        # of the running average of the training metric
  c.log = ml_collections.ConfigDict()
  c.log.progress = True            # a bar on a terminal, one line per evaluation in a log
  c.log.tensorboard = True         # event files in the workdir: tensorboard --logdir runs
  c.log.images = True              # ... with weightings and memory images at evaluations
  c.debug = ml_collections.ConfigDict()
  c.debug.nan_grads_at_step = 0    # >0: make that step's gradients NaN (tests the handling)
  c.debug.nan_grads_leaf = ''      # ... in the parameters whose path contains this ('' = all)
  c.eval = ml_collections.ConfigDict()
  c.eval.num_sequences = 1_000
  c.eval.lengths = (10, 20, 40, 80)
  c.model = ml_collections.ConfigDict()
  c.task = ml_collections.ConfigDict()
  return c


def complete(stored: dict) -> ml_collections.ConfigDict:
  """A config stored in a checkpoint, with harness fields added to memflax since it was
  written (e.g. length_buckets) filled by their defaults, so older runs still evaluate."""
  merged = json.loads(harness_config().to_json())
  for key, value in stored.items():
    default = merged.get(key)
    both_sections = isinstance(default, dict) and isinstance(value, dict)
    merged[key] = {**default, **value} if both_sections else value
  return ml_collections.ConfigDict(merged)


# Size variants every config file accepts after a colon: configs/X.py:tiny.
VARIANTS = {'tiny': 'a small model and short run that finishes in seconds (smoke tests)'}


def use_fast_memory_training(c: ml_collections.ConfigDict) -> None:
  """Optimizer and schedule tuned for memory-augmented models on the copy task.

  Measured on a 2-core CPU (README, "Measured"): small batches make many cheap
  updates; Adam with b2 = 0.99 and a global-norm clip of 1 damp the gradient
  spikes that make NTMs relapse after converging; the cosine decay settles the
  solution once found.
  """
  c.batch_size = 8
  c.learning_rate = 3e-3
  c.adam_b2 = 0.99
  c.grad_clip_norm = 1.0
  c.lr_schedule = 'cosine'
  c.lr_final_fraction = 0.01
  c.num_train_steps = 5_000       # 40,000 sequences
  c.log_every_steps = 50
  c.eval_every_steps = 125        # every 1,000 sequences
  c.checkpoint_every_steps = 1_000
