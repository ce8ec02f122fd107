"""Plots: learning curves, memory weightings and contents, memory profiles, continual-learning
accuracy matrices, benchmark tables.

Every function draws on a matplotlib Figure of its own, never through pyplot: nothing global
to close, and saving needs no display backend. Given `path` it writes a PNG there and returns
the path; without one it returns the Figure, for a notebook to show or a caller to save in
another format. The single-panel plots also take `ax=` to draw into a figure of the caller's
(e.g. two accuracy matrices side by side); with `ax` and no `path` they return ax's Figure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

# Scripts get Agg (no display needed) for any pyplot figures of their own, as before; a
# notebook kernel names its inline backend in MPLBACKEND, and taking it away would stop
# the notebook's own plots from showing.
if not os.environ.get('MPLBACKEND'):
  matplotlib.use('Agg')
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from memflax.metric_writer import MetricWriter  # noqa: E402

_DPI = 100


def _finish(fig: Figure, path: str | Path | None) -> Path | Figure:
  if path is None:
    return fig
  fig.savefig(path, dpi=_DPI)
  return Path(path)


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes, bool]:
  """(figure, axes, whether this call made the figure and so may lay it out)."""
  if ax is not None:
    return ax.figure, ax, False
  fig = Figure(figsize=figsize)
  return fig, fig.add_subplot(), True


def _single(fig: Figure, own: bool, path: str | Path | None) -> Path | Figure:
  if own:
    fig.tight_layout()
  return _finish(fig, path)


# ------------------------------------------------------------------ Memory access
def plot_weightings(trace: dict[str, np.ndarray], path: str | Path | None = None,
                    title: str = '') -> Path | Figure:
  """Heat maps of every head's weighting over memory slots (rows) and time (columns).

  trace: 'read_weights' / 'write_weights' arrays [T, heads, N] (memflax.evaluate.trace_one).
  """
  panels = [(name, trace[name][:, h]) for name in ('write_weights', 'read_weights')
            if name in trace for h in range(trace[name].shape[1])]
  fig = Figure(figsize=(5 * len(panels), 5))
  axes = fig.subplots(1, len(panels), squeeze=False)
  for ax, (name, w) in zip(axes[0], panels):
    used = max(int(np.max(np.nonzero(w.max(axis=0) > 1e-3)[0], initial=0)) + 2, 8)
    ax.imshow(w[:, :min(used, w.shape[1])].T, aspect='auto', origin='lower', cmap='viridis',
              interpolation='nearest', vmin=0, vmax=1)
    ax.set(title=name.replace('_', ' '), xlabel='time step', ylabel='memory slot')
  fig.suptitle(title)
  fig.tight_layout()
  return _finish(fig, path)


def plot_sequence(trace: dict[str, np.ndarray], path: str | Path | None = None,
                  title: str = '') -> Path | Figure:
  """Input, target and model output (probabilities) as bit maps over time."""
  panels = [('input', trace['inputs']), ('target', trace['targets']),
            ('output', trace['outputs'] * trace['mask'][:, None])]
  fig = Figure(figsize=(10, 6))
  axes = fig.subplots(3, 1, sharex=True)
  for ax, (name, bits) in zip(axes, panels):
    ax.imshow(bits.T, aspect='auto', cmap='gray_r', interpolation='nearest', vmin=0, vmax=1)
    ax.set(ylabel=name)
  axes[-1].set(xlabel='time step')
  fig.suptitle(title)
  fig.tight_layout()
  return _finish(fig, path)


def plot_memory(memory: np.ndarray, path: str | Path | None = None, title: str = '',
                snapshots: int = 6) -> Path | Figure:
  """What the memory holds over one sequence: memory [T, N, W] (M_t after step t).

  Top: the norm of every slot's row over time (slot × time), which shows where writes land
  and how long their contents stay; bottom: M_t itself (slots × width) at `snapshots`
  evenly spaced steps, on one colour scale centred at zero.
  """
  memory = np.asarray(memory, np.float32)
  if memory.ndim != 3:
    raise ValueError(f'memory must be [T, N, W] (time, slots, width), got shape {memory.shape}')
  steps, slots, _ = memory.shape
  shown = sorted({int(round(t)) for t in np.linspace(0, steps - 1, max(1, min(snapshots, steps)))})
  fig = Figure(figsize=(max(8.0, 1.6 * len(shown)), 7))
  grid = fig.add_gridspec(2, len(shown), height_ratios=(1, 1.2))
  top = fig.add_subplot(grid[0, :])
  norms = np.linalg.norm(memory, axis=-1)  # [T, N]
  image = top.imshow(norms.T, aspect='auto', origin='lower', cmap='magma',
                     interpolation='nearest', extent=(-0.5, steps - 0.5, -0.5, slots - 0.5))
  top.set(xlabel='time step', ylabel='memory slot', title='row norm ‖M_t[i]‖')
  fig.colorbar(image, ax=top, pad=0.01)
  scale = float(np.max(np.abs(memory[shown]))) or 1.0
  for k, t in enumerate(shown):
    ax = fig.add_subplot(grid[1, k])
    ax.imshow(memory[t], aspect='auto', origin='lower', cmap='RdBu_r', vmin=-scale,
              vmax=scale, interpolation='nearest')
    ax.set(title=f'M after step {t}', xlabel='width')
    if k:
      ax.set_yticks([])
    else:
      ax.set_ylabel('memory slot')
  fig.suptitle(title)
  fig.tight_layout()
  return _finish(fig, path)


# ------------------------------------------------------------------ Curves
def plot_store_statistics(stats: Mapping[str, dict], path: str | Path | None = None,
                          title: str = '') -> Path | Figure:
  """memflax.store_statistics.collect's result, one row of panels per memory block: the
  gate per head (weight of the memory read against local attention), the similarity of
  the retrieved keys per head, and the store's occupancy over the validation calls."""
  fig = Figure(figsize=(11, 3.2 * len(stats)))
  for row, (name, block) in enumerate(stats.items()):
    gate, hit, occupancy = (fig.add_subplot(len(stats), 3, 3 * row + i) for i in (1, 2, 3))
    heads = np.arange(len(block['gate']))
    gate.bar(heads, block['gate'], color='tab:blue')
    gate.set(ylim=(0, 1), xlabel='head', ylabel='gate (memory weight)',
             title=f'{name}' if not title else f'{title}\n{name}')
    hit.bar(heads, block['hit_score'], color='tab:orange')
    hit.set(xlabel='head', ylabel='score q·k of hits (cosine if normalised)')
    occupancy.plot(block['occupancy_by_step'], color='tab:green')
    occupancy.set(ylim=(0, 1.02), xlabel='validation call (segment)',
                  ylabel=f"store occupancy (of {block['memory_size']:,})")
    for ax in (gate, hit):
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (gate, hit, occupancy):
      ax.grid(alpha=0.3)
  fig.tight_layout()
  return _finish(fig, path)


def plot_profile(profile: dict, path: str | Path | None = None, title: str = '',
                 ax: Axes | None = None) -> Path | Figure:
  """A memory profile (evaluate.memory_profile): the headline metric against the size axis."""
  return plot_profiles({'': profile}, path, title, ax=ax)


def plot_profiles(profiles: Mapping[str, dict], path: str | Path | None = None,
                  title: str = '', ax: Axes | None = None) -> Path | Figure:
  """Several memory profiles on one axis, {label: profile} (e.g. one per model; the same
  task, so the same size axis and metric)."""
  fig, ax, own = _axes(ax, (6, 4))
  for label, profile in profiles.items():
    ax.plot(profile['sizes'], profile['values'], marker='o', label=label or None)
  first = next(iter(profiles.values()))
  better = 'higher is better' if first['higher_is_better'] else 'lower is better'
  ax.set(xlabel=first['size_name'], ylabel=f"{first['metric']} ({better})", title=title)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # sizes are counts
  ax.grid(alpha=0.3)
  if any(profiles):
    ax.legend(fontsize='small')
  return _single(fig, own, path)


def plot_curves(curves: dict[str, list], path: str | Path | None = None, xlabel: str = '',
                ylabel: str = '', title: str = '', ax: Axes | None = None,
                log_y: bool = False, log_x: bool = False) -> Path | Figure:
  """Learning curves: {label: [(x, y), ...]}, one line each (e.g. held-out error against
  training sequences for several runs; with log_x and log_y, time against length)."""
  fig, ax, own = _axes(ax, (7, 4.5))
  for label, points in curves.items():
    if points:
      xs, ys = zip(*points)
      ax.plot(xs, ys, label=label, marker='o' if log_x else None, markersize=3)
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  if log_y:
    ax.set_yscale('log')
  if log_x:
    ax.set_xscale('log', base=2)
  ax.grid(alpha=0.3)
  if curves:
    ax.legend(fontsize='small')
  return _single(fig, own, path)


def read_curve(workdir: str | Path, metric: str = 'eval_bit_errors_per_seq',
               batch_size: int | None = None) -> list[tuple[float, float]]:
  """[(x, metric)] from a run's metrics.jsonl, every row that has `metric`; x is the step,
  or training sequences (step × batch_size) when batch_size is given."""
  scale = batch_size or 1
  return [(row['step'] * scale, float(row[metric])) for row in MetricWriter(workdir).read()
          if metric in row]


def plot_learning_curves(runs: Mapping[str, str | Path] | Sequence[str | Path],
                         path: str | Path | None = None,
                         metric: str = 'eval_bit_errors_per_seq',
                         batch_size: int | Mapping[str, int] | None = None, title: str = '',
                         ax: Axes | None = None, log_y: bool = False) -> Path | Figure:
  """`metric` against training progress for several runs, read from their metrics.jsonl.

  runs: {label: workdir}, or workdirs (labelled by their names). batch_size: one for all
  runs or {label: batch size}; with it the x axis counts training sequences (runs with
  different batch sizes compare fairly), without it steps.
  """
  if not isinstance(runs, Mapping):
    runs = {Path(w).name: w for w in runs}
  sizes = batch_size if isinstance(batch_size, Mapping) else {k: batch_size for k in runs}
  missing = [k for k in runs if isinstance(batch_size, Mapping) and k not in batch_size]
  if missing:
    raise ValueError(f'batch_size has no entry for run(s) {missing}')
  curves = {label: read_curve(workdir, metric, sizes[label]) for label, workdir in runs.items()}
  empty = [label for label, points in curves.items() if not points]
  if len(empty) == len(curves):
    raise ValueError(f'no row of {", ".join(str(w) for w in runs.values())} has {metric!r}')
  xlabel = 'training sequences' if batch_size else 'training step'
  return plot_curves(curves, path, xlabel=xlabel, ylabel=metric, title=title, ax=ax,
                     log_y=log_y)


# ------------------------------------------------------------------ Continual learning
def _continual_result(result: dict | str | Path) -> dict:
  """continual.json's dict from the dict itself, the file, or the run's workdir."""
  if isinstance(result, dict):
    return result
  path = Path(result)
  if path.is_dir():
    path = path / 'continual.json'
  return json.loads(path.read_text())


def plot_accuracy_matrix(result: dict | str | Path, path: str | Path | None = None,
                         title: str | None = None, key: str = 'R',
                         ax: Axes | None = None) -> Path | Figure:
  """The accuracy matrix of a task sequence (memflax.continual.report: row 0 before any
  training, row i+1 after task i; column j the task evaluated), each cell annotated.

  result: continual.json's dict, its path or the run's workdir. key: 'R' (accuracy, higher
  is better) or another matrix of continual.json, e.g. 'R_bit_errors_per_seq' (drawn with
  the colour scale reversed, so that better is brighter in both). title: default names the
  strategy with ACC, BWT and forgetting.
  """
  result = _continual_result(result)
  if key not in result:
    raise ValueError(f'continual result has no {key!r}; it has '
                     f'{sorted(k for k in result if k.startswith("R"))}')
  r = np.array(result[key], dtype=np.float64)
  tasks = list(result['tasks'])
  if r.shape != (len(tasks) + 1, len(tasks)):
    raise ValueError(f'{key} must have shape [T+1, T] = {(len(tasks) + 1, len(tasks))} for '
                     f'tasks {tasks}, got {r.shape}')
  fig, ax, own = _axes(ax, (1.8 + 1.4 * len(tasks), 1.3 + 0.7 * len(r)))
  accuracy = key == 'R'
  if accuracy:  # chance on the bit tasks is 0.5: keep the scale from hiding differences
    image = ax.imshow(r, vmin=min(0.5, float(r.min())), vmax=1.0, cmap='viridis', aspect='auto')
  else:
    image = ax.imshow(r, cmap='viridis_r', aspect='auto')
  middle = 0.5 * (float(np.nanmin(r)) + float(np.nanmax(r)))
  for (i, j), v in np.ndenumerate(r):
    bright = v > 0.8 if accuracy else v < middle  # black on the bright end of the map
    ax.text(j, i, f'{v:.3f}' if abs(v) < 100 else f'{v:.0f}', ha='center', va='center',
            color='black' if bright else 'white', fontsize=9)
  ax.set_xticks(range(len(tasks)), tasks, rotation=20)
  ax.set_yticks(range(len(r)), ['before'] + [f'after {t}' for t in tasks])
  ax.set_xlabel('evaluated on')
  if title is None:
    title = (f'{result.get("strategy", "")}: ACC {result["ACC"]:.3f}, BWT {result["BWT"]:+.3f}, '
             f'forgetting {result["forgetting"]:.3f}' if 'ACC' in result else '')
  ax.set_title(title, fontsize=10)
  fig.colorbar(image, ax=ax, label='accuracy' if accuracy else key[2:] or key)
  return _single(fig, own, path)


# ------------------------------------------------------------------ Tables
def plot_table(rows: Sequence[Mapping], path: str | Path | None = None,
               columns: Sequence[str] | None = None, title: str = '',
               formats: Mapping[str, str] | None = None) -> Path | Figure:
  """A benchmark table as a figure: one row per dict, `columns` (default: the first row's
  keys) as columns; numbers formatted by `formats` ({column: '{:.2f}'}) or to 4
  significant digits."""
  if not rows:
    raise ValueError('plot_table needs at least one row')
  columns = list(columns or rows[0].keys())
  formats = dict(formats or {})

  def cell(column, value):
    if column in formats and value is not None:
      return formats[column].format(value)
    if isinstance(value, (float, np.floating)):
      return f'{value:.4g}'
    return '' if value is None else str(value)

  text = [[cell(c, row.get(c)) for c in columns] for row in rows]
  width = max(4.0, 1.5 * len(columns))
  fig = Figure(figsize=(width, 0.6 + 0.35 * (len(rows) + 1) + (0.3 if title else 0)))
  ax = fig.add_subplot()
  ax.axis('off')
  table = ax.table(cellText=text, colLabels=columns, loc='center', cellLoc='center')
  table.auto_set_font_size(False)
  table.set_fontsize(9)
  table.auto_set_column_width(list(range(len(columns))))  # long names are not clipped
  table.scale(1.0, 1.3)
  for (i, _), c in table.get_celld().items():
    if i == 0:
      c.set_text_props(weight='bold')
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  return _finish(fig, path)
