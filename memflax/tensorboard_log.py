"""TensorBoard event files in the workdir, written by tensorboardX (no TensorFlow needed).

`tensorboard --logdir runs` then shows every run under runs/ side by side. The
event files are for watching; `metrics.jsonl` stays the machine-readable record.
Only process 0 writes. A resumed run purges the events past its checkpoint, so the
curves read as one run, as metrics.jsonl does.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np


class TensorBoardLog:
  """Scalars at log steps, evaluation metrics and images at evaluation steps."""

  def __init__(self, workdir: str | Path, start_step: int = 0, enabled: bool = True):
    self._writer = None
    if enabled and jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # noqa: PLC0415  (only runs that log pay for it)
      # Events at the checkpoint step itself were written before it was saved: keep them.
      purge = start_step + 1 if start_step else None
      self._writer = SummaryWriter(logdir=str(workdir), purge_step=purge, flush_secs=30)

  def scalars(self, step: int, section: str, values: dict) -> None:
    """`section/name` scalars, e.g. train/loss, eval/bit_errors_per_seq."""
    if self._writer is None:
      return
    for name, value in values.items():
      value = np.asarray(value)
      if value.ndim == 0 and np.issubdtype(value.dtype, np.number):
        self._writer.add_scalar(f'{section}/{name}', float(value), step)

  def trace_images(self, step: int, trace: dict[str, np.ndarray]) -> None:
    """Images of one traced example (memflax.tracing): each head's weighting (slot × time),
    the memory after the last step (slot × width) and each slot's norm over time."""
    if self._writer is None:
      return
    for name in ('write_weights', 'read_weights'):
      if name in trace:
        for head in range(trace[name].shape[1]):
          self._image(f'weightings/{name}_head{head}', trace[name][:, head].T, step)
    if 'memory' in trace:
      memory = trace['memory']  # [T, N, W]
      self._image('memory/final', _unit_range(memory[-1]), step)
      self._image('memory/slot_norm_over_time',
                  _unit_range(np.linalg.norm(memory, axis=-1).T), step)
    panels = [trace['targets'], trace['outputs'] * trace['mask'][:, None]]
    self._image('sequence/target_over_output', np.concatenate(panels, axis=1).T, step)

  def _image(self, tag: str, rows_by_cols: np.ndarray, step: int) -> None:
    image = np.clip(np.asarray(rows_by_cols, np.float32), 0.0, 1.0)
    self._writer.add_image(tag, image[None], step, dataformats='CHW')

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def _unit_range(values: np.ndarray) -> np.ndarray:
  """Min-max scaled to [0, 1] (a constant array maps to zeros)."""
  low, high = float(values.min()), float(values.max())
  return (values - low) / (high - low) if high > low else np.zeros_like(values)
