"""What a training run prints: a progress bar on a terminal, one line per event in a log.

On a TTY, tqdm redraws one bar (step, loss, steps/s). Anywhere else (a pipe, a
file, a cluster log) a redrawn bar is noise, so the run prints one plain line per
evaluation instead. Only process 0 of a multi-process run prints.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar('T')


class ProgressLog:

  def __init__(self, total: int, initial: int, enabled: bool = True, stream=None,
               bar: bool = True, description: str = ''):
    """enabled=False: print nothing (processes other than 0); bar=False: lines, never a bar
    (config.log.progress=false)."""
    self.total = total
    self.enabled = enabled
    self.stream = stream or sys.stdout
    self.started = time.perf_counter()
    interactive = enabled and bar and self.stream.isatty()
    self._bar = tqdm(total=total, initial=initial, file=self.stream, dynamic_ncols=True,
                     mininterval=1.0, desc=description or None) if interactive else None
    self._last = {}

  def line(self, text: str) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(text, file=self.stream)
    else:
      print(text, file=self.stream, flush=True)

  def update(self, step: int, loss: float, steps_per_sec: float) -> None:
    """At a log step: redraw the bar (TTY only; a log gets lines at evaluations)."""
    self._last = dict(loss=loss, steps_per_sec=steps_per_sec)
    if self._bar is not None:
      self._bar.set_postfix_str(f'loss={loss:.4f} steps/s={steps_per_sec:.1f}', refresh=False)
      self._bar.update(step - self._bar.n)

  def event(self, step: int, values: dict) -> None:
    """At an evaluation: one line in a log (on a TTY the bar already shows progress)."""
    if self._bar is not None or not self.enabled:
      return
    parts = [f'step {step}/{self.total}']
    if self._last:
      parts.append(f'loss {self._last["loss"]:.4f}')
    parts += [f'{k} {v:.4g}' for k, v in values.items()]
    if self._last:
      parts.append(f'{self._last["steps_per_sec"]:.1f} steps/s')
    self.line(', '.join(parts))

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None


def _clock(seconds: float) -> str:
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else f'{minutes}:{seconds:02d}'


def summary(config, workdir: Path, start: int, train_time_s: float, last_eval: dict) -> str:
  """The one line printed when a run ends."""
  final = ', '.join(f'{k} {v:.4g}' for k, v in last_eval.items()) or 'no evaluation'
  resumed = f' (resumed at step {start})' if start else ''
  return (f'done: {config.model.name} on {config.task.name}, step {config.num_train_steps}'
          f'{resumed}, {final}, training time {_clock(train_time_s)}; metrics '
          f'{workdir / "metrics.jsonl"}, checkpoints {workdir / "checkpoints"}')


def bar(iterable: Iterable[T], total: int | None = None, description: str = '',
        enabled: bool = True, stream=None) -> Iterable[T]:
  """`iterable` with a progress bar on a terminal; on anything else (or enabled=False) the
  iterable itself, silent: the caller's own lines are the log. For evaluations over sizes,
  benchmark sweeps and other loops of long steps."""
  stream = stream or sys.stderr
  # jax only if the caller has imported it (a benchmark parent that spawns measured children
  # should not pay for it); without jax there is one process.
  main = 'jax' not in sys.modules or sys.modules['jax'].process_index() == 0
  if not (enabled and main and stream.isatty()):
    return iterable
  return tqdm(iterable, total=total, desc=description, file=stream, dynamic_ncols=True,
              leave=False)
