"""One model for tasks of different widths: the padded interface.

The model of a sequence is built once with output_size = the widest task's output and
reads inputs as wide as the widest task's input. `PaddedTask` wraps task j so that the
training loop, evaluation and the strategies see that common interface:

  inputs   task j's bit vectors [B, T_j, D_in_j], zero-padded on the channel axis to
           [B, T_j, D_in] (channels D_in_j.. are always 0 for task j);
  logits   the model's [B, T_j, D_out] are sliced to task j's own channels
           [..., :D_out_j] before task j's loss; the other output channels receive no
           gradient from task j and are never scored on it.

Channels are shared by position, not by meaning: copy's delimiter channel (8) is a bit
channel of repeat copy's input, and so on; the model tells tasks apart by the input
layout itself (no task-identity channel is added, so what it learns about one task's
channels is exactly what interferes with another's: the situation continual-learning
regularisers are for). Sequence lengths T_j differ between tasks; recurrent and memory
models take any T, so nothing is padded in time.

`accuracy` is added to the task's metrics for bit tasks: per sequence s,
1 − bit_errors_s / bits_s with bits_s = (masked answer steps of s) × D_out_j, averaged
over the batch (each sequence weighs the same, like the loss, so per-device means
average exactly to the global mean). Token tasks (byte LM) already report next-byte
accuracy; their widths are all 256, so nothing is padded for them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


class PaddedTask:
  """Task `task` seen through the common [input_width → output_width] interface.

  Every attribute not defined here (primary_metric, probe, host_fed, batch_from_tokens,
  seq_length, ...) is the wrapped task's.
  """

  def __init__(self, task, input_width: int, output_width: int):
    if task.input_size > input_width or task.output_size > output_width:
      raise ValueError(f'task of width {task.input_size}→{task.output_size} does not fit the '
                       f'interface {input_width}→{output_width}')
    if getattr(task, 'host_fed', False) and (task.input_size, task.output_size) != (
        input_width, output_width):
      raise ValueError('token tasks (byte LM) cannot share a model with tasks of other widths')
    self.task = task
    self.input_width = input_width
    self.output_width = output_width

  def __getattr__(self, name):
    # Only reached for names not set in __init__ or defined on the class.
    return getattr(self.__dict__['task'], name)

  @property
  def input_size(self) -> int:
    return self.input_width

  @property
  def output_size(self) -> int:
    return self.output_width

  def pad_inputs(self, batch: dict) -> dict:
    """inputs [..., D_in_j] -> [..., input_width] (zeros appended); other entries as they are."""
    extra = self.input_width - batch['inputs'].shape[-1]
    if not extra:
      return batch
    pad = [(0, 0)] * (batch['inputs'].ndim - 1) + [(0, extra)]
    return {**batch, 'inputs': jnp.pad(batch['inputs'], pad)}

  def make_batch(self, key: jax.Array, batch_size: int, **kwargs) -> dict:
    return self.pad_inputs(self.task.make_batch(key, batch_size, **kwargs))

  def batch_from_tokens(self, tokens, row_mask=None, **lanes) -> dict:
    """lanes: `lengths` and `reset` of document lanes (byte_lm.Task.stream_documents)."""
    return self.pad_inputs(self.task.batch_from_tokens(tokens, row_mask, **lanes))

  def task_logits(self, logits: jax.Array) -> jax.Array:
    """[..., output_width] -> [..., D_out_j]: task j's channels."""
    return logits[..., :self.task.output_size]

  def loss_and_metrics(self, logits: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
    logits = self.task_logits(logits)
    loss, metrics = self.task.loss_and_metrics(logits, batch)
    if jnp.issubdtype(batch['targets'].dtype, jnp.floating):  # bit targets [B, T, D_out_j]
      metrics = {**metrics, 'accuracy': bit_accuracy(logits, batch['targets'], batch['mask'])}
    return loss, metrics

  def token_losses(self, logits: jax.Array, batch: dict) -> jax.Array:
    return self.task.token_losses(self.task_logits(logits), batch)


def bit_accuracy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
  """logits, targets [B, T, D], mask [B, T] -> mean over sequences of
  1 − (bit errors of s) / (masked target bits of s); a sequence without target bits
  counts as fully correct."""
  bits = jnp.sum(mask, axis=1) * targets.shape[-1]  # [B]
  errors = jnp.sum(jnp.abs((logits > 0).astype(jnp.float32) - targets) * mask[..., None],
                   axis=(1, 2))
  return jnp.mean(1.0 - errors / jnp.maximum(bits, 1.0))


def interface_widths(task_objects) -> tuple[int, int]:
  """(widest input, widest output) over the sequence's tasks."""
  return (max(t.input_size for t in task_objects), max(t.output_size for t in task_objects))
