"""What a training run prints: a progress bar on a terminal, one line per event in a log.

On a TTY, tqdm redraws one bar (step, loss, steps/s). Anywhere else (a pipe, a
file, a cluster log) a redrawn bar is noise, so the run prints one plain line per
evaluation instead. Only process 0 of a multi-process run prints.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm


class ProgressLog:

  def __init__(self, total: int, initial: int, enabled: bool = True, stream=None):
    self.total = total
    self.enabled = enabled
    self.stream = stream or sys.stdout
    self.started = time.perf_counter()
    interactive = enabled and self.stream.isatty()
    self._bar = tqdm(total=total, initial=initial, file=self.stream, dynamic_ncols=True,
                     mininterval=1.0) if interactive else None
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
