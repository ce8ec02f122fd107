"""Matrix (fast-weight) memories written by linear attention and the delta rule.

One head's memory is a matrix S [d_k, d_v]: keys address it, values are stored in it,
queries read it. With a decay α_t = exp(g_t) ∈ (0, 1] (g_t ≤ 0) and a write strength β_t:

  linear attention    S_t = α_t S_{t−1} + β_t k_t v_tᵀ                       (additive)
  delta rule          S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ      (overwrite)
  read-out            o_t = S_tᵀ q_t

The delta rule first erases what S holds under k_t, then adds v_t: with ‖k_t‖ = 1 and
β_t = 1 it stores exactly k_t → v_t, as an NTM erase/add write does with the key as the
weighting. g = 0 everywhere is DeltaNet (Yang et al., NeurIPS 2024) or plain linear
attention; a learned g is Gated DeltaNet (Yang et al., ICLR 2025). The papers write the
column form S_t = S_{t−1} α_t (I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ, the transpose of this one.

Two ways to compute the same outputs:

* `recurrent`: a `lax.scan` over time, O(T · d_k · d_v) work and one state at a time; it is
  also the form `step` uses to generate one token at a time with constant memory.
* `chunkwise`: chunks of C steps. Inside a chunk only matmuls: with γ_r = Π_{i≤r} α_i
  (chunk-local), Γ_{ri} = γ_r / γ_i and the chunk's starting state S_0, the delta rule's
  writes S_r = α_r S_{r−1} + k_r u_rᵀ have "pseudo-values"
      u_r = β_r (v_r − γ_r S_0ᵀ k_r − Σ_{i<r} Γ_{ri} (k_iᵀ k_r) u_i),
  a unit lower-triangular system (the UT transform of the WY representation; `unit_lower_inverse`):
      (I + StrictLower(diag(β) (K Kᵀ ⊙ Γ))) U = diag(β) V − diag(β γ) K S_0,
  so U = Ũ − W S_0 with Ũ, W solved once per chunk, independent of S_0. Then
      O   = diag(γ) Q S_0 + (Q Kᵀ ⊙ Γ ⊙ M) U          (M: lower triangle with diagonal)
      S_C = γ_C S_0 + (diag(γ_C / γ) K)ᵀ U.
  Only the last line carries across chunks: a scan over T/C chunk states. For linear
  attention U = diag(β) V (no system to solve). Steps past T (padding to a whole chunk)
  get β = 0, k = 0 and g = 0, which leaves the state unchanged.

Shapes: q, k [..., T, d_k], v [..., T, d_v], beta and g [..., T], states [..., d_k, d_v];
the leading axes (batch, heads) are carried through. Outputs o [..., T, d_v].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
RULES = ('delta', 'linear')


def _check_rule(rule: str) -> None:
  if rule not in RULES:
    raise ValueError(f'update rule must be one of {RULES}, got {rule!r}')


def zero_state(q: Array, v: Array) -> Array:
  """The empty memory for queries q [..., T, d_k] and values v [..., T, d_v]:
  zeros [..., d_k, d_v] in float32 (or wider)."""
  dtype = jnp.promote_types(jnp.result_type(q, v), jnp.float32)
  return jnp.zeros((*q.shape[:-2], q.shape[-1], v.shape[-1]), dtype)


def step(state: Array, q: Array, k: Array, v: Array, beta: Array, g: Array,
         rule: str = 'delta') -> tuple[Array, Array]:
  """One write then one read. state [..., d_k, d_v], q, k [..., d_k], v [..., d_v],
  beta, g [...] -> (new state, o [..., d_v] = new stateᵀ q)."""
  _check_rule(rule)
  decay = jnp.exp(g)[..., None]                                     # [..., 1]
  write = beta[..., None] * v
  if rule == 'delta':
    # α (I − β k kᵀ) S + β k vᵀ = α S + k (β v − α β kᵀ S)ᵀ: the erase is one read under k.
    recalled = jnp.einsum('...k,...kv->...v', k, state)
    write = write - decay * beta[..., None] * recalled
  new = decay[..., None] * state + k[..., :, None] * write[..., None, :]
  return new, jnp.einsum('...k,...kv->...v', q, new)


def recurrent(q: Array, k: Array, v: Array, beta: Array, g: Array,
              initial_state: Array | None = None, rule: str = 'delta') -> tuple[Array, Array]:
  """The memory step by step (`lax.scan` over T). Shapes as in the module docstring
  -> (o [..., T, d_v], final state [..., d_k, d_v])."""
  _check_rule(rule)
  state = zero_state(q, v) if initial_state is None else initial_state
  time_first = lambda x: jnp.moveaxis(x, -2, 0)  # noqa: E731
  xs = (time_first(q), time_first(k), time_first(v), jnp.moveaxis(beta, -1, 0),
        jnp.moveaxis(g, -1, 0))

  def body(s, x):
    return step(s, *x, rule=rule)

  final, outputs = jax.lax.scan(body, state, xs)
  return jnp.moveaxis(outputs, 0, -2).astype(v.dtype), final


def _to_chunks(x: Array, chunk: int, time_axis: int) -> Array:
  """Pads the time axis to a multiple of `chunk` with zeros and splits it: [..., T, ...] ->
  [..., T/C, C, ...]."""
  length = x.shape[time_axis]
  pad = -length % chunk
  widths = [(0, 0)] * x.ndim
  widths[time_axis] = (0, pad)
  x = jnp.pad(x, widths)
  axis = time_axis % x.ndim
  return x.reshape(*x.shape[:axis], (length + pad) // chunk, chunk, *x.shape[axis + 1:])


def unit_lower_inverse(strict: Array) -> Array:
  """(I + A)⁻¹ for strictly lower-triangular A [..., C, C] (any C).

  Block forward substitution by doubling: with the inverses X₁₁, X₂₂ of two diagonal
  blocks known, [[L₁₁, 0], [L₂₁, L₂₂]]⁻¹ = [[X₁₁, 0], [−X₂₂ L₂₁ X₁₁, X₂₂]]; log₂ C rounds of
  batched matmuls. It is exact substitution reordered (unlike a Neumann series in A, whose
  powers blow up when keys repeat), and XLA's triangular_solve runs ~50× slower on CPU for
  these small batched systems.
  """
  size = strict.shape[-1]
  padded = 1 << max(size - 1, 0).bit_length()
  if padded != size:  # pad with identity rows/columns: the inverse's top-left block is kept
    widths = [(0, 0)] * (strict.ndim - 2) + [(0, padded - size)] * 2
    strict = jnp.pad(strict, widths)
  lead = strict.shape[:-2]
  # The diagonal blocks of every size, by halving from the whole matrix down: slices only
  # (a strided diagonal gather would transpose into a slow scatter in the backward pass).
  diagonal = {padded: strict[..., None, :, :]}
  width = padded
  while width > 2:
    half, parent = width // 2, diagonal[width]
    pair = jnp.stack([parent[..., :half, :half], parent[..., half:, half:]], axis=-3)
    diagonal[half] = pair.reshape(*lead, -1, half, half)
    width = half
  blocks = jnp.ones((*lead, padded, 1, 1), strict.dtype)    # inverses of the 1 × 1 blocks
  width = 1
  while width < padded:
    lower_left = diagonal[2 * width][..., width:, :width]    # L₂₁ of each pair of blocks
    first, second = blocks[..., 0::2, :, :], blocks[..., 1::2, :, :]
    corner = -(second @ lower_left @ first)
    zeros = jnp.zeros_like(corner)
    blocks = jnp.concatenate([jnp.concatenate([first, zeros], axis=-1),
                              jnp.concatenate([corner, second], axis=-1)], axis=-2)
    width *= 2
  return blocks[..., 0, :size, :size]


def chunkwise(q: Array, k: Array, v: Array, beta: Array, g: Array, chunk_size: int = 64,
              initial_state: Array | None = None,
              rule: str = 'delta') -> tuple[Array, Array]:
  """The same outputs and final state as `recurrent`, chunk by chunk (module docstring).

  Any T works (padded inside to a multiple of chunk_size). Work per chunk is O(C² d + C d²)
  matmuls; the sequential part is T/C small state updates.
  """
  _check_rule(rule)
  if chunk_size < 1:
    raise ValueError(f'chunk_size must be ≥ 1, got {chunk_size}')
  length = q.shape[-2]
  dtype = jnp.promote_types(jnp.result_type(q, k, v), jnp.float32)
  state = (zero_state(q, v) if initial_state is None else initial_state).astype(dtype)
  state = jnp.broadcast_to(state, (*q.shape[:-2], *state.shape[-2:]))
  q, k, v = (_to_chunks(x.astype(dtype), chunk_size, -2) for x in (q, k, v))  # [..., n, C, d]
  beta, g = (_to_chunks(x.astype(dtype), chunk_size, -1) for x in (beta, g))  # [..., n, C]

  # exp(−80) ≈ 2e-35 is already "forget everything" in float32; the floor keeps the cumulative
  # sums finite (an α of exactly 0, g = −inf, would give −inf − (−inf) = NaN in Γ) and small
  # enough that their differences keep their precision.
  g = jnp.maximum(g, -80.0)
  log_gamma = jnp.cumsum(g, axis=-1)                                # log γ_r, [..., n, C]
  causal = np.tril(np.ones((chunk_size, chunk_size), bool))
  # Γ_ri = γ_r / γ_i on and below the diagonal; above it the exponent may be large and
  # positive, so it is masked before exp (exp(−inf) = 0, with a zero gradient).
  exponent = log_gamma[..., :, None] - log_gamma[..., None, :]
  decay = jnp.exp(jnp.where(causal, exponent, -jnp.inf))           # [..., n, C, C]
  gamma = jnp.exp(log_gamma)
  to_end = jnp.exp(log_gamma[..., -1:] - log_gamma)                 # γ_C / γ_i

  if rule == 'delta':
    strictly_below = np.tril(np.ones((chunk_size, chunk_size), bool), -1)
    kk = jnp.einsum('...rd,...id->...ri', k, k)
    inverse = unit_lower_inverse(jnp.where(strictly_below, beta[..., :, None] * kk * decay, 0.0))
    rhs = jnp.concatenate([beta[..., None] * v, (beta * gamma)[..., None] * k], axis=-1)
    solved = inverse @ rhs
    u_known, w = solved[..., :v.shape[-1]], solved[..., v.shape[-1]:]
  else:
    u_known, w = beta[..., None] * v, None

  def chunk_step(s, chunk):
    u_known_c, w_c, k_c, to_end_c, gamma_end = chunk
    u = u_known_c if w_c is None else u_known_c - w_c @ s
    new = gamma_end[..., None, None] * s + jnp.swapaxes(k_c * to_end_c[..., None], -1, -2) @ u
    return new, (s, u)

  chunk_first = lambda x: None if x is None else jnp.moveaxis(x, -3, 0)  # noqa: E731
  xs = (chunk_first(u_known), chunk_first(w), chunk_first(k),
        jnp.moveaxis(to_end, -2, 0), jnp.moveaxis(gamma[..., -1], -1, 0))
  final, (starts, u) = jax.lax.scan(chunk_step, state, xs)
  starts, u = jnp.moveaxis(starts, 0, -3), jnp.moveaxis(u, 0, -3)  # [..., n, d_k, d_v], [..., n, C, d_v]

  within = jnp.einsum('...rd,...id->...ri', q, k) * decay
  out = gamma[..., None] * (q @ starts) + within @ u                # [..., n, C, d_v]
  out = out.reshape(*out.shape[:-3], -1, out.shape[-1])[..., :length, :]
  return out.astype(v.dtype), final
