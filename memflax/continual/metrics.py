"""Forgetting metrics of a task sequence, from its accuracy matrix (pure numpy).

R has T+1 rows and T columns (tasks 0..T-1, 0-based here; the papers count from 1):
  R[0, j]   = b_j, accuracy on task j before any training (the initial parameters);
  R[i+1, j] = accuracy on task j after training tasks 0..i (snapshot i).
"Accuracy" is higher-is-better throughout. For the bit tasks it is per-bit accuracy,
1 − bit_errors_s / bits_s for each held-out sequence s (bits_s = its masked target bits
= answer steps × output channels), averaged over sequences, the same per-sequence
weighting as the training loss (memflax.continual.padded); for a byte LM it is the
next-byte top-1 accuracy over the validation windows' bytes.

Definitions (GEM: Lopez-Paz & Ranzato 2017, §5; forgetting: Chaudhry et al. 2018,
RWalk, §4.1), with A[i, j] = R[i+1, j] the matrix after training:
  ACC        = (1/T) Σ_{j<T} A[T-1, j]                       denominator T
  BWT        = (1/(T-1)) Σ_{j<T-1} (A[T-1, j] − A[j, j])       denominator T-1
  FWT        = (1/(T-1)) Σ_{j≥1} (A[j-1, j] − b_j)            denominator T-1
  forgetting = (1/(T-1)) Σ_{j<T-1} max_{i<T-1} (A[i, j] − A[T-1, j])   denominator T-1
(RWalk eq. 6: f_j^k = max_{l∈{1..k-1}} a_{l,j} − a_{k,j}, so the max runs over every
snapshot before the last, including those taken before task j was trained.) With T = 1 the T-1 averages are empty and reported as 0.0.
"""

from __future__ import annotations

import numpy as np


def _after_training(r) -> np.ndarray:
  r = np.asarray(r, np.float64)
  if r.ndim != 2 or r.shape[0] != r.shape[1] + 1 or r.shape[1] < 1:
    raise ValueError(f'R must have shape [T+1, T] with T >= 1 (a row before training, then '
                     f'one per task), got {r.shape}')
  return r


def acc(r) -> float:
  """Mean final accuracy over all T tasks."""
  r = _after_training(r)
  return float(np.mean(r[-1]))


def bwt(r) -> float:
  """Backward transfer: mean over the first T-1 tasks of final minus just-learned accuracy
  (negative = forgetting)."""
  r = _after_training(r)
  t = r.shape[1]
  if t == 1:
    return 0.0
  a = r[1:]
  return float(np.mean([a[t - 1, j] - a[j, j] for j in range(t - 1)]))


def fwt(r) -> float:
  """Forward transfer: mean over tasks 1..T-1 of the accuracy just before training task j
  minus the accuracy of the initial parameters b_j."""
  r = _after_training(r)
  t = r.shape[1]
  if t == 1:
    return 0.0
  a, b = r[1:], r[0]
  return float(np.mean([a[j - 1, j] - b[j] for j in range(1, t)]))


def forgetting(r) -> float:
  """Chaudhry et al.'s average forgetting: mean over the first T-1 tasks of the best
  accuracy any snapshot before the last had on it minus the final accuracy."""
  r = _after_training(r)
  t = r.shape[1]
  if t == 1:
    return 0.0
  a = r[1:]
  return float(np.mean([max(a[i, j] for i in range(t - 1)) - a[t - 1, j]
                        for j in range(t - 1)]))


def summary(r) -> dict:
  """{'R', 'ACC', 'BWT', 'FWT', 'forgetting'} (R as nested lists)."""
  r = _after_training(r)
  return dict(R=r.tolist(), ACC=acc(r), BWT=bwt(r), FWT=fwt(r), forgetting=forgetting(r))
