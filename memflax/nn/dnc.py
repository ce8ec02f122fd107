"""Differentiable Neural Computer memory: allocation, temporal links, read modes.

Pure functions on arrays plus `DNCInterface`, the flax module that splits a
controller state into the interface vector. Content addressing, reading and the
erase/add write are shared with the NTM (memflax.nn.memory). Shapes use B batch,
N memory slots, W slot width, R read heads; the DNC has a single write head, so
write weightings here are [B, N].

Equations (Graves et al. 2016, "Hybrid computing using a neural network with
dynamic external memory", Methods):
  retention   ψ_t = Π_i (1 − f^i_t w^{r,i}_{t−1})
  usage       u_t = (u_{t−1} + w^w_{t−1} − u_{t−1} ∘ w^w_{t−1}) ∘ ψ_t
  allocation  φ_t = indices sorted by ascending u_t,
              a_t[φ_t[j]] = (1 − u_t[φ_t[j]]) Π_{i<j} u_t[φ_t[i]]
  write       w^w_t = g^w_t (g^a_t a_t + (1 − g^a_t) c^w_t)
  precedence  p_t = (1 − Σ_i w^w_t[i]) p_{t−1} + w^w_t
  links       L_t[i,j] = (1 − w^w_t[i] − w^w_t[j]) L_{t−1}[i,j] + w^w_t[i] p_{t−1}[j],
              L_t[i,i] = 0
  directions  f^i_t = L_t w^{r,i}_{t−1},   b^i_t = L_tᵀ w^{r,i}_{t−1}
  read        w^{r,i}_t = π^i_t[1] b^i_t + π^i_t[2] c^{r,i}_t + π^i_t[3] f^i_t
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# Read-mode order along the last axis of `read_modes`, as π[1], π[2], π[3] in the paper.
BACKWARD, CONTENT, FORWARD = 0, 1, 2
NUM_READ_MODES = 3


def materialised(x: Array) -> Array:
  """x, computed into a buffer of its own (exactly: a sum with zero).

  In a rematerialised scan's backward pass the carry of each step is a slice of a
  per-step stack. XLA's CPU compiler fuses that slice into every N×N kernel that
  broadcasts the vector along rows and columns, and such kernels run at half speed
  (a [32,128,128] link update: 0.60 against 0.29 ms). A reduction is not fused into
  them (jax.lax.optimization_barrier is removed before fusion, so it does not help).
  """
  return jnp.sum(jnp.stack([x, jnp.zeros_like(x)], axis=-1), axis=-1)


def retention(free_gates: Array, prev_read_weights: Array) -> Array:
  """`ψ = Π_i (1 − f_i w^{r,i}_{t−1})`: how much of each slot survives the free gates.

  free_gates [B,R] in [0,1], prev_read_weights [B,R,N] -> [B,N].
  """
  return jnp.prod(1.0 - free_gates[..., None] * prev_read_weights, axis=-2)


def usage(prev_usage: Array, prev_write_weights: Array, psi: Array) -> Array:
  """`u_t = (u_{t−1} + w^w_{t−1} − u_{t−1} ∘ w^w_{t−1}) ∘ ψ_t`.

  prev_usage [B,N], prev_write_weights [B,N], psi [B,N] -> [B,N], each in [0,1].
  """
  return (prev_usage + prev_write_weights - prev_usage * prev_write_weights) * psi


def allocation(u: Array) -> Array:
  """Allocation weighting `a[φ_j] = (1 − u[φ_j]) Π_{i<j} u[φ_i]`, φ = argsort(u).

  u [..., N] in [0,1] -> [..., N], summing to 1 − Π_i u_i ≤ 1 and largest at the
  least used slot. Gradients flow through the sorted usages; the sort order itself
  is piecewise constant, so (as in the paper) no gradient passes through it.

  The order comes from comparisons, not a sort: slot i goes before slot j when
  u_i < u_j, or u_i = u_j and i < j (a stable sort: equal usages, e.g. an empty
  memory, go to the lower index first), and slot j's place is the number of slots
  before it. The usages are scattered to their places and the result gathered back.
  That is N² comparisons against a sort's N log N, but in one vector kernel, where
  XLA's CPU sort calls a comparator per pair: in the DNC's batch-32 copy step (N =
  128, 41 steps) the two argsorts took 70 of 368 ms, forward and recomputation;
  the DNC's link matrix is N×N per step anyway. Values and gradients are exactly
  the sort's (tests compare with jnp.argsort, ties included).
  """
  n = u.shape[-1]
  flat = u.reshape(-1, n)
  index = jnp.arange(n)
  u_i, u_j = flat[:, :, None], flat[:, None, :]
  goes_before = (u_i < u_j) | ((u_i == u_j) & (index[:, None] < index[None, :]))
  place = jnp.sum(goes_before, axis=1, dtype=jnp.int32)  # [B,N]: φ_place[j] = j
  rows = jnp.arange(flat.shape[0])[:, None]
  sorted_u = jnp.zeros_like(flat).at[rows, place].set(flat, unique_indices=True)
  # Exclusive product: slot φ_j is only free to the extent every less-used slot is taken.
  taken_before = jnp.cumprod(
      jnp.concatenate([jnp.ones_like(sorted_u[:, :1]), sorted_u[:, :-1]], axis=-1), axis=-1)
  sorted_a = (1.0 - sorted_u) * taken_before
  return jnp.take_along_axis(sorted_a, place, axis=-1).reshape(u.shape)


def write_weighting(alloc: Array, content: Array, alloc_gate: Array, write_gate: Array) -> Array:
  """`w^w = g^w (g^a a + (1 − g^a) c^w)`.

  alloc [B,N], content [B,N], alloc_gate [B], write_gate [B] (gates in [0,1]) -> [B,N].
  """
  ga = alloc_gate[..., None]
  return write_gate[..., None] * (ga * alloc + (1.0 - ga) * content)


def precedence(prev_precedence: Array, write_weights: Array) -> Array:
  """`p_t = (1 − Σ_i w^w_t[i]) p_{t−1} + w^w_t`. [B,N], [B,N] -> [B,N]."""
  return (1.0 - jnp.sum(write_weights, axis=-1, keepdims=True)) * prev_precedence + write_weights


def link(prev_link: Array, prev_precedence: Array, write_weights: Array) -> Array:
  """`L_t[i,j] = (1 − w_i − w_j) L_{t−1}[i,j] + w_i p_{t−1}[j]`, with zero diagonal.

  prev_link [B,N,N], prev_precedence [B,N], write_weights [B,N] -> [B,N,N]. Row i
  says which slot was written just before slot i.
  """
  w_i = write_weights[..., :, None]
  w_j = write_weights[..., None, :]
  new = (1.0 - w_i - w_j) * prev_link + w_i * prev_precedence[..., None, :]
  # A slot cannot follow itself; masking (not subtracting) keeps the diagonal exactly 0.
  n = new.shape[-1]
  return new * (1.0 - jnp.eye(n, dtype=new.dtype))


def forward_weighting(link_matrix: Array, prev_read_weights: Array) -> Array:
  """`f = L w^r_{t−1}` per head. link [B,N,N], prev_read_weights [B,R,N] -> [B,R,N]."""
  return jnp.einsum('bij,brj->bri', link_matrix, prev_read_weights)


def backward_weighting(link_matrix: Array, prev_read_weights: Array) -> Array:
  """`b = Lᵀ w^r_{t−1}` per head. link [B,N,N], prev_read_weights [B,R,N] -> [B,R,N]."""
  return jnp.einsum('bji,brj->bri', link_matrix, prev_read_weights)


@jax.custom_vjp
def link_and_directions(prev_link: Array, prev_precedence: Array, write_weights: Array,
                        prev_read_weights: Array) -> tuple[Array, Array, Array]:
  """`link`, then `forward_weighting` and `backward_weighting` of the new links, in one call.

  prev_link [B,N,N], prev_precedence [B,N], write_weights [B,N], prev_read_weights
  [B,R,N] -> (link [B,N,N], forward [B,R,N], backward [B,R,N]), the same values as
  the three functions. The gradient is written out (below) because the one XLA
  derives on a CPU recomputes the N×N cotangent in two kernels, transposes an outer
  product inside each and fuses slices of the per-step stacks into them; written out
  it is a few plain N×N passes (DNC batch-32 step: see the README's Throughput).
  """
  new_link = link(prev_link, prev_precedence, write_weights)
  return (new_link, forward_weighting(new_link, prev_read_weights),
          backward_weighting(new_link, prev_read_weights))


def _link_and_directions_fwd(prev_link, prev_precedence, write_weights, prev_read_weights):
  out = link_and_directions(prev_link, prev_precedence, write_weights, prev_read_weights)
  return out, (prev_link, prev_precedence, write_weights, prev_read_weights, out[0])


def _link_and_directions_bwd(residuals, cotangents):
  """With D_ij = 1 − w_i − w_j, M the off-diagonal mask and r the previous read weights:
  G = M ∘ (dL + Σ_r df_r r_rᵀ + Σ_r r_r db_rᵀ) is the cotangent of the new links, and
  dL_prev = D ∘ G, dw = G p − rowsum(G ∘ L_prev) − colsum(G ∘ L_prev), dp = Gᵀ w,
  dr = L_newᵀ df + L_new db."""
  prev_link, prev_p, w, r, new_link = residuals
  d_link, d_fwd, d_bwd = cotangents
  n = prev_link.shape[-1]
  off_diagonal = 1.0 - jnp.eye(n, dtype=prev_link.dtype)
  g = (d_link + jnp.einsum('bri,brj->bij', d_fwd, r)
       + jnp.einsum('bri,brj->bij', r, d_bwd)) * off_diagonal
  d_r = (jnp.einsum('bij,bri->brj', new_link, d_fwd)
         + jnp.einsum('bij,brj->bri', new_link, d_bwd))
  d_prev_link = (1.0 - w[..., :, None] - w[..., None, :]) * g
  g_prev = g * prev_link
  d_w = jnp.einsum('bij,bj->bi', g, prev_p) - jnp.sum(g_prev, -1) - jnp.sum(g_prev, -2)
  d_p = jnp.einsum('bij,bi->bj', g, w)
  return d_prev_link, d_p, d_w, d_r


link_and_directions.defvjp(_link_and_directions_fwd, _link_and_directions_bwd)


def read_weighting(backward: Array, content: Array, forward: Array, read_modes: Array) -> Array:
  """`w^r = π[1] b + π[2] c + π[3] f`.

  backward/content/forward [B,R,N], read_modes [B,R,3] (order BACKWARD, CONTENT,
  FORWARD; rows on the simplex) -> [B,R,N].
  """
  pi = read_modes[..., None]
  return (pi[..., BACKWARD, :] * backward + pi[..., CONTENT, :] * content
          + pi[..., FORWARD, :] * forward)


def oneplus(x: Array) -> Array:
  """`1 + log(1 + eˣ)`: strengths in [1, ∞), so a content lookup is at least as sharp as a
  plain softmax over the cosine similarities."""
  return 1.0 + jax.nn.softplus(x)


def interface_size(num_read_heads: int, width: int) -> int:
  """Length of the interface vector ξ: `R·W + 3W + 5R + 3` (Graves et al. 2016, Methods)."""
  return num_read_heads * width + 3 * width + 5 * num_read_heads + 3


class DNCInterface(nn.Module):
  """Maps a controller state h [B, C] to the DNC interface parameters.

  Returns a dict:
    read_keys [B,R,W]          (linear)      read_strengths [B,R]  (oneplus, ≥ 1)
    write_key [B,1,W]          (linear)      write_strength [B,1]  (oneplus, ≥ 1)
    erase [B,1,W]              (sigmoid)     write_vector [B,1,W]  (linear)
    free_gates [B,R]           (sigmoid)     alloc_gate [B]        (sigmoid)
    write_gate [B]             (sigmoid)     read_modes [B,R,3]    (softmax over modes)
  The write head keeps a head axis of 1 so memflax.nn.memory's functions apply as is.

  Raw outputs are clipped to ±`clip` before the nonlinearities, as for the NTM
  heads, so strengths cannot blow up into NaNs early in training.
  """

  num_read_heads: int
  width: int
  clip: float = 20.0

  @nn.compact
  def __call__(self, h: Array) -> dict[str, Array]:
    r, w = self.num_read_heads, self.width
    sizes = {'read_keys': r * w, 'read_strengths': r, 'write_key': w, 'write_strength': 1,
             'erase': w, 'write_vector': w, 'free_gates': r, 'alloc_gate': 1,
             'write_gate': 1, 'read_modes': r * NUM_READ_MODES}
    total = sum(sizes.values())
    assert total == interface_size(r, w)
    raw = nn.Dense(total, name='xi')(h)
    raw = jnp.clip(raw, -self.clip, self.clip)
    parts, start = {}, 0
    for name, size in sizes.items():
      parts[name] = raw[..., start:start + size]
      start += size
    batch = h.shape[:-1]
    return {
        'read_keys': parts['read_keys'].reshape(*batch, r, w),
        'read_strengths': oneplus(parts['read_strengths']),
        'write_key': parts['write_key'][..., None, :],
        'write_strength': oneplus(parts['write_strength']),
        'erase': jax.nn.sigmoid(parts['erase'])[..., None, :],
        'write_vector': parts['write_vector'][..., None, :],
        'free_gates': jax.nn.sigmoid(parts['free_gates']),
        'alloc_gate': jax.nn.sigmoid(parts['alloc_gate'][..., 0]),
        'write_gate': jax.nn.sigmoid(parts['write_gate'][..., 0]),
        'read_modes': jax.nn.softmax(
            parts['read_modes'].reshape(*batch, r, NUM_READ_MODES), axis=-1),
    }
