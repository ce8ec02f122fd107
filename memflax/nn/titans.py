"""Neural long-term memory (Behrouz et al. 2025, "Titans: Learning to Memorize at Test Time").

The memory is a small MLP M_θ per head whose weights θ are *state*, learned at test time:
each token writes its key/value pair by a gradient step on an associative loss. Only the
initial weights θ_0 (and the projections and gates) are trained by the outer loss, which
backpropagates through every inner step (second-order terms included).

Per head, with d = head width, weights W_i [out_i, in_i] (column convention, y = W x):

  M_θ(x)   = f_θ(x) (+ x if residual),  f_θ = W_L σ(W_{L−1} ... σ(W_1 x)),  σ = SiLU
             (L = depth; L = 1 is a linear matrix memory M(x) = W x (+ x))
  ℓ_t(θ)   = ‖M_θ(k_t) − v_t‖²                                   (associative loss)
  S_t      = η_t S_{t−1} − θ_t ∇ℓ_t(M_{c(t)})                    (momentum: "surprise")
  M_t      = (1 − α_t) M_{t−1} + S_t                              (α_t: forgetting)
  y_t      = M_t(q_t)                                             (retrieval)

with data-dependent gates θ_t (inner learning rate), η_t, α_t in (0, 1) from x_t. Chunks:
the sequence is cut into chunks of C tokens and every gradient of a chunk is taken at the
weights M_{c(t)} the chunk started from (so they are independent: one jax.vmap of
jax.grad over the chunk's tokens, as in the paper's parallel form); the two linear
recurrences within the chunk are then closed-form [C, C] scalar mixing matrices
(`chunk_update`), and a lax.scan carries (M, S) across chunks. C = 1 is the fully
sequential rule (c(t) = t − 1).

Which state y_t reads: M_t, the weights after token t's own update (its gradient taken at
the chunk start). M_t depends on tokens ≤ t only, so y_t is causal for every C.

A sequence whose length is not a multiple of C is padded; padded tokens are exact no-ops
(θ = 0, η = 1, α = 0 and no momentum added to M), so the final state is that after the
last real token.

Stability: the inner step must stay below ~2 / (curvature of ℓ), which grows with the
memory's weights; max_inner_lr = 0.1 trained the tiny MQAR config cleanly, 0.2 turned
non-finite at step ~390 and 1.0 at once (MLP memory), so raise it with care.
"""

from __future__ import annotations

import functools
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from memflax.nn.causal_conv import causal_depthwise_conv, empty_history

Array = jax.Array
Weights = tuple  # of per-layer matrices W_i [out_i, in_i] (one head), or with leading axes


def layer_shapes(width: int, depth: int, hidden: int) -> list[tuple[int, int]]:
  """[(out, in)] of M's layers: d → hidden → ... → hidden → d (depth 1: d → d)."""
  sizes = [width] + [hidden] * (depth - 1) + [width]
  return [(sizes[i + 1], sizes[i]) for i in range(depth)]


def memory_apply(weights: Weights, x: Array, residual: bool,
                 offsets: Weights | None = None) -> Array:
  """M_θ(x). weights: matrices [out, in]; x [..., d] -> [..., d]. `offsets` (one [out]
  per layer, added to that layer's output z_l) exist to be differentiated: ∂ℓ/∂offset_l
  is δ_l, the factor of ∇W_l = δ_l a_{l−1}ᵀ."""
  return _forward(weights, x, residual, offsets)[0]


def _forward(weights: Weights, x: Array, residual: bool, offsets: Weights | None = None):
  """(M_θ(x), each layer's input a_{l−1} [..., in_l])."""
  h, inputs = x, []
  for i, w in enumerate(weights):
    if i:
      h = jax.nn.silu(h)
    inputs.append(h)
    h = h @ w.T + (0.0 if offsets is None else offsets[i])
  return (x + h if residual else h), tuple(inputs)


def associative_loss(weights: Weights, key: Array, value: Array, residual: bool) -> Array:
  """ℓ(θ) = ‖M_θ(k) − v‖². key, value [d] -> []."""
  return jnp.sum(jnp.square(memory_apply(weights, key, residual) - value))


def token_gradients(weights: Weights, keys: Array, values: Array, residual: bool) -> Weights:
  """∇_θ ℓ_t(θ) for each token, all at the same θ. keys, values [C, d] -> matrices
  [C, out, in]. (What `token_factors` gives in factored form.)"""
  grad = jax.grad(associative_loss)
  return jax.vmap(grad, in_axes=(None, 0, 0, None))(weights, keys, values, residual)


def token_factors(weights: Weights, keys: Array, values: Array, residual: bool):
  """∇_{W_l} ℓ_t(θ) = δ_{t,l} a_{t,l−1}ᵀ for each token at the same θ, as its factors:
  keys, values [C, d] -> (δ per layer [C, out_l], a per layer [C, in_l]).

  δ_{t,l} = ∂ℓ_t/∂z_l comes from jax.grad with respect to a zero offset on z_l, so the
  outer training differentiates through it like through any jax.grad; the [C, out, in]
  gradients themselves are never formed.
  """
  def loss(offsets, key, value):
    y, inputs = _forward(weights, key, residual, offsets)
    return jnp.sum(jnp.square(y - value)), inputs

  def one(key, value):
    zeros = tuple(jnp.zeros(w.shape[0], key.dtype) for w in weights)
    deltas, inputs = jax.grad(loss, has_aux=True)(zeros, key, value)
    return deltas, inputs

  return jax.vmap(one)(keys, values)


def products(x: Array) -> Array:
  """Q[i, s] = ∏_{m=s}^{i} x_m (1 when s = i + 1, 0 when s > i + 1). x [C] in [0, 1] ->
  Q [C, C + 1].

  Each segment's sum of logs is one product with a constant 0/1 mask (no differences of
  a cumulative sum, which would lose precision). x is floored at the smallest normal
  float, so a zero gate gives products of ~1e-38 rather than NaN gradients.
  """
  size = x.shape[0]
  i, s, m = np.ogrid[:size, :size + 1, :size]
  inside = ((s <= m) & (m <= i)).astype(np.float32)  # [C, C + 1, C]
  logs = jnp.log(jnp.maximum(x, jnp.finfo(x.dtype).tiny))
  total = jnp.einsum('ism,m->is', inside.astype(logs.dtype), logs)
  return jnp.where(s[..., 0] <= i[..., 0] + 1, jnp.exp(total), 0.0)


def clip_factor(deltas: Weights, inputs: Weights, max_norm: float) -> Array:
  """Per token, min(1, max_norm / ‖∇ℓ_t‖) over all layers, the norm from the factors:
  ‖δ aᵀ‖_F = ‖δ‖ ‖a‖, so no gradient matrix is formed. deltas/inputs per layer [C, ·]
  -> [C] (all ones when max_norm <= 0: no clipping)."""
  if max_norm <= 0:
    return jnp.ones(deltas[0].shape[0], deltas[0].dtype)
  squared = sum(jnp.sum(jnp.square(d), -1) * jnp.sum(jnp.square(a), -1)
                for d, a in zip(deltas, inputs))
  norm = jnp.sqrt(squared + jnp.finfo(squared.dtype).tiny)
  return jnp.minimum(1.0, max_norm / norm)


def chunk_update(state: tuple[Weights, Weights], chunk: dict, residual: bool,
                 max_grad_norm: float = 0.0):
  """One chunk for one head: state (M, S) at the chunk start; chunk: queries, keys, values
  [C, d], lr, eta, alpha, valid [C] -> ((M, S) after the chunk, reads y [C, d]).

  The two recurrences, unrolled over the chunk (u_j = −θ_j ∇ℓ_j(M_{−1}), γ = 1 − α,
  Q^x from `products`, m_i = valid_i; a padded token has θ = 0, η = γ = 1, m = 0):

    S_i = Q^η[i, 0] S_{−1} + Σ_{j≤i} Q^η[i, j+1] u_j
    M_t = Q^γ[t, 0] M_{−1} + Σ_{i≤t} Q^γ[t, i+1] m_i S_i
        = Q^γ[t, 0] M_{−1} + c_t S_{−1} + Σ_{j≤t} A[t, j] u_j

  with c = Q^γ[:, 1:] diag(m) Q^η[:, 0] [C] and A = Q^γ[:, 1:] diag(m) Q^η[:, 1:] [C, C].
  Each u_j is −θ_j δ_j a_jᵀ per layer (`token_factors`), so layer l of M_t applied to an
  input h_t never needs M_t itself:

  W_{l,t} h_t = Q^γ[t, 0] W_l h_t + c_t S_l h_t − Σ_j A[t, j] θ_j (a_{j,l−1}ᵀ h_t) δ_{j,l}

  (a linear-attention-like [C, C] product); only the chunk's final (M, S) is formed.
  max_grad_norm > 0 scales each token's ∇ℓ_j down to at most that norm (`clip_factor`).
  """
  weights, momentum = state
  valid = chunk['valid']
  deltas, inputs = token_factors(weights, chunk['keys'], chunk['values'], residual)
  clip = clip_factor(deltas, inputs, max_grad_norm)
  step = -jnp.where(valid, chunk['lr'] * clip, 0.0)  # −θ_j (times the clip factor)
  eta = products(jnp.where(valid, chunk['eta'], 1.0))
  keep = products(jnp.where(valid, 1.0 - chunk['alpha'], 1.0))
  added = keep[:, 1:] * valid.astype(keep.dtype)
  mix = (added @ eta[:, 1:]) * step  # A[t, j] (−θ_j)
  from_momentum = added @ eta[:, 0]  # c_t
  decay = keep[:, 0]

  h = chunk['queries']
  for i, (w, s, delta, a) in enumerate(zip(weights, momentum, deltas, inputs)):
    if i:
      h = jax.nn.silu(h)
    h = (decay[:, None] * (h @ w.T) + from_momentum[:, None] * (h @ s.T)
         + (mix * (h @ a.T)) @ delta)
  reads = chunk['queries'] + h if residual else h

  outer = lambda coef, delta, a: jnp.einsum('j,jo,ji->oi', coef, delta, a)
  new_weights = tuple(decay[-1] * w + from_momentum[-1] * s + outer(mix[-1], delta, a)
                      for w, s, delta, a in zip(weights, momentum, deltas, inputs))
  new_momentum = tuple(eta[-1, 0] * s + outer(eta[-1, 1:] * step, delta, a)
                       for s, delta, a in zip(momentum, deltas, inputs))
  return (new_weights, new_momentum), reads


def memorize(weights: Weights, momentum: Weights, queries: Array, keys: Array, values: Array,
             lr: Array, eta: Array, alpha: Array, chunk_size: int, residual: bool,
             max_grad_norm: float = 0.0):
  """The memory over a whole sequence, one head.

  weights, momentum: (M, S) before the first token, matrices [out, in]; queries, keys,
  values [T, d]; lr (θ_t), eta (η_t), alpha (α_t) [T] -> (reads y [T, d], (M_T, S_T)).
  """
  length = keys.shape[0]
  chunks = -(-length // chunk_size)
  pad = chunks * chunk_size - length
  sequence = dict(queries=queries, keys=keys, values=values, lr=lr, eta=eta, alpha=alpha,
                  valid=jnp.arange(length + pad) < length)

  def split(x):
    if x.shape[0] == length:
      x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape(chunks, chunk_size, *x.shape[1:])

  step = functools.partial(chunk_update, residual=residual, max_grad_norm=max_grad_norm)
  state, reads = jax.lax.scan(step, (tuple(weights), tuple(momentum)),
                              jax.tree.map(split, sequence))
  return reads.reshape(-1, reads.shape[-1])[:length], state


class NeuralMemory(nn.Module):
  """Titans memory as a sequence mixer: x [B, T, D] -> y [B, T, D], D = width (H heads of
  d = D / H).

    [q̃, k̃, ṽ] = SiLU(CausalConv(x W_qkv))              [B, T, 3D], kernel `conv_size`
    q, k       = per head, L2-normalised if normalize_keys
    θ_t = max_inner_lr · σ(x W_θ + b_θ),  η_t = σ(x W_η + b_η),  α_t = σ(x W_α + b_α)
                                                          each [B, T, H]
    y_t^h      = M^h_t(q_t^h)                              (see the module docstring)
    y          = W_o (concat_h y^h ⊙ SiLU(x W_g))         [B, T, D]

  The initial memory θ_0 is a parameter per layer ('memory_i' [H, out, in]); the state
  carried through a sequence is {'weights', 'momentum'} (each a tuple of [B, H, out, in])
  and the convolution's 'history' [B, K−1, 3D]. `__call__` starts from θ_0, S = 0 and an
  empty history; `step` continues a state by T tokens (decoding: T = 1, chunk size 1).
  """

  width: int
  num_heads: int = 4
  depth: int = 2
  hidden: int = 32
  chunk_size: int = 16
  conv_size: int = 4
  residual: bool = True
  normalize_keys: bool = True
  max_inner_lr: float = 0.1
  max_inner_grad_norm: float = 0.0

  def setup(self):
    if self.width % self.num_heads:
      raise ValueError(f'width {self.width} is not divisible by num_heads {self.num_heads}')
    self.qkv = nn.Dense(3 * self.width, use_bias=False)
    self.conv = self.param('conv', nn.initializers.normal(self.conv_size ** -0.5),
                           (self.conv_size, 3 * self.width))
    # Gate biases start at θ = max/2, η = 0.5, α ≈ 0.05: memory kept over ~20 tokens.
    bias = lambda value: nn.initializers.constant(value)
    self.inner_lr = nn.Dense(self.num_heads, bias_init=bias(0.0))
    self.momentum = nn.Dense(self.num_heads, bias_init=bias(0.0))
    self.forget = nn.Dense(self.num_heads, bias_init=bias(-3.0))
    head = self.width // self.num_heads
    self.initial = [
        self.param(f'memory_{i}', nn.initializers.lecun_normal(
                       in_axis=-1, out_axis=-2, batch_axis=(0,)),
                   (self.num_heads, *shape))
        for i, shape in enumerate(layer_shapes(head, self.depth, self.hidden))]
    self.gate = nn.Dense(self.width, use_bias=False)
    self.out = nn.Dense(self.width, use_bias=False)

  def initial_state(self, batch_size: int) -> dict:
    """{'weights': θ_0, 'momentum': 0} [B, H, out, in] and an empty 'history'."""
    weights = tuple(jnp.broadcast_to(w, (batch_size, *w.shape)) for w in self.initial)
    return {'weights': weights, 'momentum': tuple(jnp.zeros_like(w) for w in weights),
            'history': empty_history(batch_size, self.conv_size, 3 * self.width)}

  def __call__(self, x: Array) -> tuple[Array, dict]:
    """x [B, T, D] -> (y [B, T, D], gates {'inner_lr', 'momentum', 'forget'} [B, T, H])."""
    y, _, gates = self.step(self.initial_state(x.shape[0]), x, self.chunk_size)
    return y, gates

  def step(self, state: dict, x: Array, chunk_size: int = 1):
    """Continues `state` by x [B, T, D] -> (y [B, T, D], new state, gates [B, T, H])."""
    batch, length, width = x.shape
    heads = self.num_heads
    mixed, history = causal_depthwise_conv(self.qkv(x), self.conv, state['history'])
    q, k, v = jnp.split(jax.nn.silu(mixed).reshape(batch, length, 3 * heads, -1), 3, axis=2)
    if self.normalize_keys:
      q, k = _l2_normalise(q), _l2_normalise(k)
    gates = {'inner_lr': self.max_inner_lr * jax.nn.sigmoid(self.inner_lr(x)),
             'momentum': jax.nn.sigmoid(self.momentum(x)),
             'forget': jax.nn.sigmoid(self.forget(x))}
    heads_first = lambda a: jnp.moveaxis(a, 2, 1)  # [B, T, H, ...] -> [B, H, T, ...]
    run = functools.partial(memorize, chunk_size=chunk_size, residual=self.residual,
                            max_grad_norm=self.max_inner_grad_norm)
    run = jax.vmap(jax.vmap(run))  # over batch, then heads
    reads, (weights, momentum) = run(
        state['weights'], state['momentum'], heads_first(q), heads_first(k), heads_first(v),
        heads_first(gates['inner_lr']), heads_first(gates['momentum']),
        heads_first(gates['forget']))
    reads = jnp.moveaxis(reads, 1, 2).reshape(batch, length, width)
    y = self.out(reads * jax.nn.silu(self.gate(x)))
    return y, {'weights': weights, 'momentum': momentum, 'history': history}, gates


def _l2_normalise(x: Array, eps: float = 1e-6) -> Array:
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)
