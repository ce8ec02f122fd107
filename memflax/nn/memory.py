"""Neural Turing Machine memory: addressing, read, erase/add write, normalisation.

Pure functions on arrays (usable on their own from a notebook) plus `NTMHeads`,
the flax module that turns a controller state into head parameters. Shapes use
B batch, H heads, N memory slots, W slot width, S = 2·shift_range + 1 shifts.

Memory is [B,N,W] (one row per slot) by default. Every function that takes memory
also accepts `slots_last=True` for a memory stored transposed, [B,W,N]: same
equations, same results up to float rounding. The NTM keeps its memory that way
because on a CPU the long slot axis then lies contiguous, so the per-step similarity,
read and write kernels vectorise over N instead of over the short W (the memory part
of the NTM train step alone, forward and backward over 41 steps at batch 32: 47 → 30 ms).

Equations (Graves et al. 2014, "Neural Turing Machines", §3.3):
  content    w^c_i = softmax_i(β · K(k, M_i)),   K = cosine similarity
  interpolate w^g = g · w^c + (1 − g) · w_{t-1}
  shift      w̃_i = Σ_j w^g_j · s_{(i − j) mod N}
  sharpen    w_i = w̃_i^γ / Σ_j w̃_j^γ,   γ ≥ 1
  read       r = Σ_i w_i M_i = wᵀ M
  write      M̃ = M ∘ (1 − w eᵀ) + w aᵀ     (erase, then add)
  normalise  M = M̃ / ‖M̃‖_F                 (optional; product card, seed 003 §4.2.3)
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from memflax.nn import weight_taps

Array = jax.Array

# Frobenius norms below this are treated as this (an all-zero memory stays zero).
# It is 100x below even a single 1e-6 entry (the constant initial memory has
# ‖M‖_F = 1e-6·√(NW), 5e-5 at 128×20), so no memory a model holds is affected; it
# is no smaller because at M = 0 the gradient is 1/floor (M/‖M‖ has no limit
# there), and its square (1e-16) is a normal float32.
_FROBENIUS_FLOOR = 1e-8
# Far below the squared norm of a row of the 1e-6 constant initial memory (2e-11).
_NORM_EPS = 1e-16


def cosine_similarity(keys: Array, memory: Array, slots_last: bool = False) -> Array:
  """Cosine similarity of each key with each memory row.

  keys [B, H, W], memory [B, N, W] ([B, W, N] with slots_last) -> [B, H, N].
  """
  dots = jnp.einsum('bhw,bwn->bhn' if slots_last else 'bhw,bnw->bhn', keys, memory)
  # sqrt(Σx² + ε) rather than ‖x‖: the norm's gradient is NaN at an all-zero row,
  # which a full erase (σ(20) == 1 in float32) with a zero add can produce.
  key_norm = jnp.sqrt(jnp.sum(jnp.square(keys), axis=-1) + _NORM_EPS)[..., :, None]
  width_axis = -2 if slots_last else -1
  mem_norm = jnp.sqrt(jnp.sum(jnp.square(memory), axis=width_axis) + _NORM_EPS)[..., None, :]
  return dots / (key_norm * mem_norm)


def content_weighting(memory: Array, keys: Array, beta: Array, slots_last: bool = False) -> Array:
  """`softmax_i(β · cos(k, M_i))`. memory [B,N,W] (or [B,W,N], slots_last), keys [B,H,W],
  beta [B,H] -> [B,H,N]."""
  return jax.nn.softmax(beta[..., None] * cosine_similarity(keys, memory, slots_last), axis=-1)


def interpolate(w_content: Array, w_prev: Array, gate: Array) -> Array:
  """`g · w^c + (1 − g) · w_{t-1}`. weightings [B,H,N], gate [B,H] -> [B,H,N]."""
  g = gate[..., None]
  return g * w_content + (1.0 - g) * w_prev


def circular_shift(w: Array, shift: Array) -> Array:
  """Circular convolution of a weighting with a shift distribution.

  w [B,H,N], shift [B,H,S] over offsets −r..r (S = 2r+1) -> [B,H,N];
  `out_i = Σ_k shift_k · w_{(i − offset_k) mod N}`, so offset +1 moves focus forward.
  """
  radius = (shift.shape[-1] - 1) // 2
  # S is small (3 by default): a sum of S rolls is cheaper than an N×N matrix.
  return sum(shift[..., k, None] * jnp.roll(w, k - radius, axis=-1)
             for k in range(shift.shape[-1]))


def sharpen(w: Array, gamma: Array) -> Array:
  """`w_i^γ / Σ_j w_j^γ`. w [B,H,N], gamma [B,H] (≥ 1) -> [B,H,N]."""
  # softmax(γ·log w) equals w^γ / Σ w^γ but cannot underflow to 0/0 for large γ;
  # the floor keeps log finite where the shift left exact zeros.
  return jax.nn.softmax(gamma[..., None] * jnp.log(jnp.maximum(w, 1e-30)), axis=-1)


def shift_confidence(shift: Array) -> Array:
  """How far a shift distribution is from uniform, in [0, 1]: `(max_k s_k − 1/S) / (1 − 1/S)`.

  shift [B,H,S] -> [B,H]; 0 for a uniform shift (S = 1: always 1), 1 for a one-hot one.
  Used to raise a write head's γ as its moves become certain (NTM `write_sharpen_boost`):
  sharp once it has learned to step, soft while it has not.
  """
  num = shift.shape[-1]
  if num == 1:
    return jnp.ones(shift.shape[:-1], shift.dtype)
  return (jnp.max(shift, axis=-1) - 1.0 / num) / (1.0 - 1.0 / num)


def address(memory: Array, w_prev: Array, keys: Array, beta: Array, gate: Array,
            shift: Array, gamma: Array, slots_last: bool = False) -> Array:
  """The full NTM addressing pipeline: content → interpolate → shift → sharpen.

  memory [B,N,W] (or [B,W,N], slots_last), w_prev [B,H,N], keys [B,H,W],
  beta/gate/gamma [B,H], shift [B,H,S] -> weighting [B,H,N] (each row sums to 1).
  """
  w = content_weighting(memory, keys, beta, slots_last)
  w = interpolate(w, w_prev, gate)
  w = circular_shift(w, shift)
  return sharpen(w, gamma)


def read(memory: Array, weights: Array, slots_last: bool = False) -> Array:
  """`r = wᵀ M` for each head. memory [B,N,W] (or [B,W,N], slots_last), weights [B,H,N]
  -> [B,H,W]."""
  return jnp.einsum('bhn,bwn->bhw' if slots_last else 'bhn,bnw->bhw', weights, memory)


def write(memory: Array, weights: Array, erase: Array, add: Array,
          slots_last: bool = False) -> Array:
  """Erase then add: `M̃ = M ∘ Π_h (1 − w_h e_hᵀ) + Σ_h w_h a_hᵀ`.

  With one head this is exactly `M ∘ (1 − w eᵀ) + w aᵀ`; with several, erasures
  multiply and additions sum, so the order of heads does not matter (Graves §3.2).
  memory [B,N,W] (or [B,W,N], slots_last), weights [B,H,N], erase/add [B,H,W]
  (erase in [0,1]) -> memory in the layout it came in.
  """
  if weights.shape[1] == 1:
    return _write_one_head(memory, weights[:, 0], erase[:, 0], add[:, 0], slots_last)
  if slots_last:
    keep = jnp.prod(1.0 - erase[..., :, None] * weights[..., None, :], axis=1)
    return memory * keep + jnp.einsum('bhn,bhw->bwn', weights, add)
  keep = jnp.prod(1.0 - weights[..., :, None] * erase[..., None, :], axis=1)
  return memory * keep + jnp.einsum('bhn,bhw->bnw', weights, add)


def _outer(w: Array, v: Array, slots_last: bool) -> Array:
  """w [B,N], v [B,W] -> w vᵀ [B,N,W], or its transpose [B,W,N] with slots_last."""
  return v[:, :, None] * w[:, None, :] if slots_last else w[:, :, None] * v[:, None, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _write_one_head(memory: Array, w: Array, erase: Array, add: Array,
                    slots_last: bool) -> Array:
  """`M ∘ (1 − w eᵀ) + w aᵀ`. memory [B,N,W] (or [B,W,N]), w [B,N], erase/add [B,W].

  Its gradient is written out because autodiff's version reduces [B,N,W] products over
  N and W in separate elementwise passes, which XLA's CPU backend ran as slow generic
  reductions (the largest cost of the whole NTM train step at batch 32); here the
  reductions are batched matrix-vector products. With g = ∂L/∂M̃ and P = g ∘ M:
    ∂M = g ∘ (1 − w eᵀ),  ∂w = g a − P e,  ∂e = −Pᵀ w,  ∂a = gᵀ w.
  """
  return memory * (1.0 - _outer(w, erase, slots_last)) + _outer(w, add, slots_last)


def _write_one_head_fwd(memory, w, erase, add, slots_last):
  return _write_one_head(memory, w, erase, add, slots_last), (memory, w, erase, add)


def _write_one_head_bwd(slots_last, residuals, g):
  memory, w, erase, add = residuals
  g_times_memory = g * memory
  d_memory = g * (1.0 - _outer(w, erase, slots_last))
  per_slot, per_width = ('bkn,bk->bn', 'bkn,bn->bk') if slots_last else ('bnk,bk->bn',
                                                                          'bnk,bn->bk')
  d_w = jnp.einsum(per_slot, g, add) - jnp.einsum(per_slot, g_times_memory, erase)
  d_erase = -jnp.einsum(per_width, g_times_memory, w)
  d_add = jnp.einsum(per_width, g, w)
  return d_memory, d_w, d_erase, d_add


_write_one_head.defvjp(_write_one_head_fwd, _write_one_head_bwd)


def frobenius_normalize(memory: Array) -> Array:
  """`M / max(‖M‖_F, 1e-8)` per batch element. memory [B,N,W] -> [B,N,W] (either layout:
  the norm is over the last two axes).

  Exactly `M / ‖M‖_F` (norm 1) for every memory with ‖M‖_F ≥ 1e-8; an all-zero
  memory stays zero, with finite gradients.
  """
  # The floor goes under the norm as a max, not added to it: ‖M‖ + ε shrinks a
  # small memory's norm to ‖M‖/(‖M‖ + ε) (0.9998 for the 1e-6 initial memory at
  # ε = 1e-8), whereas a max leaves every norm above the floor untouched. Taking it
  # on Σ M² before the sqrt keeps the gradient finite at M = 0, where d‖M‖/dM is
  # 0/0. The sum is in at least float32 so the floor's square does not underflow.
  sum_sq = jnp.sum(jnp.square(memory.astype(jnp.promote_types(memory.dtype, jnp.float32))),
                   axis=(-2, -1), keepdims=True)
  norm = jnp.sqrt(jnp.maximum(sum_sq, _FROBENIUS_FLOOR ** 2))
  return (memory / norm).astype(memory.dtype)


def addressing_size(width: int, shift_range: int) -> int:
  """Raw controller outputs per head for addressing: key W, β, g, S shifts, γ."""
  return width + 3 + 2 * shift_range + 1


def head_parameters(raw: Array, width: int, shift_range: int) -> dict[str, Array]:
  """Clipped raw head outputs -> head parameters, per head.

  raw [..., H, A] (A = addressing_size) or [..., H, A + 2W] for write heads ->
  keys [...,H,W], beta [...,H] (softplus, ≥ 0), gate [...,H] (sigmoid), shift [...,H,S]
  (softmax), gamma [...,H] (1 + softplus, ≥ 1) and, with the extra 2W, erase [...,H,W]
  (sigmoid) and add [...,H,W] (tanh).
  """
  num_shifts = 2 * shift_range + 1
  sizes = {'keys': width, 'beta': 1, 'gate': 1, 'shift': num_shifts, 'gamma': 1}
  if raw.shape[-1] == addressing_size(width, shift_range) + 2 * width:
    sizes.update(erase=width, add=width)
  parts, start = {}, 0
  for name, size in sizes.items():
    parts[name] = raw[..., start:start + size]
    start += size
  out = {
      'keys': parts['keys'],
      'beta': jax.nn.softplus(parts['beta'][..., 0]),
      'gate': jax.nn.sigmoid(parts['gate'][..., 0]),
      'shift': jax.nn.softmax(parts['shift'], axis=-1),
      'gamma': 1.0 + jax.nn.softplus(parts['gamma'][..., 0]),
  }
  if 'erase' in parts:
    out['erase'] = jax.nn.sigmoid(parts['erase'])
    out['add'] = jnp.tanh(parts['add'])
  return out


class NTMHeads(nn.Module):
  """Maps a controller state to the parameters of `num_heads` addressing heads.

  h [B, C] -> dict with keys [B,H,W], beta [B,H] (softplus, ≥ 0), gate [B,H]
  (sigmoid), shift [B,H,S] (softmax), gamma [B,H] (1 + softplus, ≥ 1) and, when
  `writes`, erase [B,H,W] (sigmoid) and add [B,H,W] (tanh): `head_parameters`.
  With `activate=False` it returns the clipped raw outputs [B,H,A] ([B,H,A+2W] when
  `writes`) instead, so that a caller can activate several head sets in one pass.

  Raw outputs are clipped to ±`clip` (Collier & Beel 2018 clip controller outputs
  to ±20), which keeps β and γ from exploding into NaNs early in training.
  """

  num_heads: int
  width: int
  shift_range: int = 1
  writes: bool = False
  clip: float = 20.0
  activate: bool = True

  @nn.compact
  def __call__(self, h: Array, taps: tuple[Array, Array] | None = None
               ) -> dict[str, Array] | Array:
    """taps: memflax.nn.weight_taps (x_tap like h, y_tap [B, H·total]) inside a scan."""
    total = addressing_size(self.width, self.shift_range) + (2 * self.width if self.writes
                                                             else 0)
    raw = nn.Dense(self.num_heads * total, name='proj',
                   dot_general=weight_taps.tapped_dot_general(taps))(h)
    raw = jnp.clip(raw, -self.clip, self.clip).reshape(*h.shape[:-1], self.num_heads, total)
    return head_parameters(raw, self.width, self.shift_range) if self.activate else raw
