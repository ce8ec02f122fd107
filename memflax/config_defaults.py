"""Harness defaults shared by every file in configs/ (each file sets model and task)."""

from __future__ import annotations

import ml_collections


def harness_config() -> ml_collections.ConfigDict:
  """Fields the training loop, checkpointing and evaluation read (names are stable API)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 32              # global, split evenly over all devices of all hosts
  c.num_train_steps = 2_000
  c.learning_rate = 1e-3
  c.optimizer = 'adam'           # 'adam' | 'rmsprop'
  c.grad_clip_norm = 50.0        # global-norm clip (Collier & Beel 2018); 0 disables
  c.log_every_steps = 50
  c.eval_every_steps = 250
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.eval = ml_collections.ConfigDict()
  c.eval.num_sequences = 1_000
  c.eval.lengths = (10, 20, 40, 80)
  c.model = ml_collections.ConfigDict()
  c.task = ml_collections.ConfigDict()
  return c
