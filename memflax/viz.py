"""Plots written to PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402


def plot_weightings(trace: dict[str, np.ndarray], path: str | Path, title: str = '') -> None:
  """Heat maps of every head's weighting over memory slots (rows) and time (columns).

  trace: 'read_weights' / 'write_weights' arrays [T, heads, N].
  """
  panels = [(name, trace[name][:, h]) for name in ('write_weights', 'read_weights')
            if name in trace for h in range(trace[name].shape[1])]
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
  for ax, (name, w) in zip(axes[0], panels):
    used = max(int(np.max(np.nonzero(w.max(axis=0) > 1e-3)[0], initial=0)) + 2, 8)
    ax.imshow(w[:, :min(used, w.shape[1])].T, aspect='auto', origin='lower', cmap='viridis',
              interpolation='nearest', vmin=0, vmax=1)
    ax.set(title=name.replace('_', ' '), xlabel='time step', ylabel='memory slot')
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_sequence(trace: dict[str, np.ndarray], path: str | Path, title: str = '') -> None:
  """Input, target and model output (probabilities) as bit maps over time."""
  panels = [('input', trace['inputs']), ('target', trace['targets']),
            ('output', trace['outputs'] * trace['mask'][:, None])]
  fig, axes = plt.subplots(3, 1, figsize=(10, 6), sharex=True)
  for ax, (name, bits) in zip(axes, panels):
    ax.imshow(bits.T, aspect='auto', cmap='gray_r', interpolation='nearest', vmin=0, vmax=1)
    ax.set(ylabel=name)
  axes[-1].set(xlabel='time step')
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_profile(profile: dict, path: str | Path, title: str = '') -> None:
  """A memory profile (evaluate.memory_profile): the headline metric against the size axis."""
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(profile['sizes'], profile['values'], marker='o')
  better = 'higher is better' if profile['higher_is_better'] else 'lower is better'
  ax.set(xlabel=profile['size_name'], ylabel=f"{profile['metric']} ({better})", title=title)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_curves(curves: dict[str, list], path: str | Path, xlabel: str = '', ylabel: str = '',
                title: str = '') -> None:
  """Learning curves: {label: [(x, y), ...]}, one line each (e.g. held-out error against
  training sequences for several runs)."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, points in curves.items():
    if points:
      xs, ys = zip(*points)
      ax.plot(xs, ys, label=label)
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.grid(alpha=0.3)
  if curves:
    ax.legend(fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
