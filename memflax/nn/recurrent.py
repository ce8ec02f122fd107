"""Recurrent cells with the `(carry, x) -> (carry, y)` interface, and a scanned stack.

Every cell is a pure flax.linen module: `initial_carry(batch_shape)` builds the
zero state, `__call__(carry, x)` advances one time step. Run them over time with
`RecurrentStack` (which uses `nn.scan`), never with a Python loop inside jit.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from memflax.nn import weight_taps

Array = jax.Array


def _dense(features: int, name: str, use_bias: bool = True, bias_init=nn.initializers.zeros,
           taps=None):
  return nn.Dense(features, use_bias=use_bias, name=name, bias_init=bias_init,
                  dot_general=weight_taps.tapped_dot_general(taps))


class RNNCell(nn.Module):
  """Elman cell: `h_t = f(W_xh x_t + W_hh h_{t-1} + b_h)`.

  Shapes: carry `h` [..., H]; x [..., D]; output [..., H].
  Params: `xh/kernel` [D, H] (W_xh transposed), `hh/kernel` [H, H], `xh/bias` [H].
  """

  features: int
  activation: Any = jnp.tanh

  @nn.compact
  def __call__(self, h: Array, x: Array) -> tuple[Array, Array]:
    pre = _dense(self.features, 'xh')(x) + _dense(self.features, 'hh', use_bias=False)(h)
    h_new = self.activation(pre)
    return h_new, h_new

  def initial_carry(self, batch_shape: Sequence[int]) -> Array:
    return jnp.zeros((*batch_shape, self.features), jnp.float32)


class LSTMCell(nn.Module):
  """Long short-term memory cell.

    i_t = σ(W_i [x_t, h_{t-1}] + b_i)      f_t = σ(W_f [x_t, h_{t-1}] + b_f)
    o_t = σ(W_o [x_t, h_{t-1}] + b_o)      c̃_t = tanh(W_c [x_t, h_{t-1}] + b_c)
    c_t = f_t ∘ c_{t-1} + i_t ∘ c̃_t        h_t = o_t ∘ tanh(c_t)

  The four gates come from one fused matmul (`gates/kernel` [D+H, 4H], gate order
  i, f, c̃, o). The forget-gate bias starts at `forget_bias` (1.0) so early in
  training the cell keeps its state rather than forgetting it by default.

  Shapes: carry `(c, h)` each [..., H]; x [..., D]; output h [..., H]. Inside a scan,
  `taps` (memflax.nn.weight_taps: x_tap [B,D+H], y_tap [B,4H]) take the gates kernel's
  gradient out of the backward loop.

  The carry is `(c, h)`, cell state first: the reverse of torch.nn.LSTMCell's
  `(h, c)` (and of torch.nn.LSTM's `(h_n, c_n)`), so a torch state `(h, c)` enters
  as `(c, h)`. The gate order i, f, c̃ (torch's g), o is torch's, so its weights
  copy as `gates/kernel = [W_ih, W_hh]ᵀ` ([D+H, 4H]) and `gates/bias = b_ih + b_hh`.
  """

  features: int
  forget_bias: float = 1.0

  @nn.compact
  def __call__(self, carry: tuple[Array, Array], x: Array,
               taps: tuple[Array, Array] | None = None) -> tuple[tuple[Array, Array], Array]:
    c, h = carry
    hidden = self.features

    def bias_init(key, shape, dtype=jnp.float32):
      del key
      return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(self.forget_bias)

    gates = _dense(4 * hidden, 'gates', bias_init=bias_init,
                   taps=taps)(jnp.concatenate([x, h], axis=-1))
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
    return (c_new, h_new), h_new

  def initial_carry(self, batch_shape: Sequence[int]) -> tuple[Array, Array]:
    zeros = jnp.zeros((*batch_shape, self.features), jnp.float32)
    return zeros, zeros


class GRUCell(nn.Module):
  """Gated recurrent unit, in one of two published variants.

  `reset_after=False` (default), Cho et al. 2014 as written there:

    z_t = σ(W_z x_t + U_z h_{t-1} + b_z)     r_t = σ(W_r x_t + U_r h_{t-1} + b_r)
    ĥ_t = tanh(W_h x_t + U_h (r_t ∘ h_{t-1}) + b_h)
    h_t = (1 − z_t) ∘ h_{t-1} + z_t ∘ ĥ_t

  `reset_after=True`, the variant of torch.nn.GRUCell, flax.linen.GRUCell and
  cuDNN (Keras's `reset_after=True`):

    n_t = tanh(W_h x_t + b_h + r_t ∘ (U_h h_{t-1} + b_hn))
    h_t = (1 − z_t) ∘ n_t + z_t ∘ h_{t-1}

  The two differ twice. (1) The reset gate acts before the recurrent matmul
  (U_h (r ∘ h)) in Cho's form and after it (r ∘ (U_h h + b_hn)) in torch's; the
  latter lets one matmul U h serve all three gates. (2) The update gate has the
  opposite sense: here z = 1 takes the candidate, in torch z = 1 keeps h_{t-1}.
  The default stays Cho's so existing configs and checkpoints are unchanged.

  Params: `x/kernel` [D, 3H] (order z, r, ĥ), `x/bias` [3H], `h_zr/kernel`
  [H, 2H] (order z, r), `h_h/kernel` [H, H], and with `reset_after` also
  `h_h/bias` [H] (b_hn; torch's other recurrent biases b_hz, b_hr only add to
  x/bias). From torch's weight_ih [3H, D], weight_hh [3H, H] (rows r, z, n) and
  biases b_ih, b_hh: x/kernel = [W_iz; W_ir; W_in]ᵀ, x/bias = [b_iz + b_hz,
  b_ir + b_hr, b_in], h_zr/kernel = [W_hz; W_hr]ᵀ, h_h/kernel = W_hnᵀ,
  h_h/bias = b_hn.

  Shapes: carry h [..., H]; x [..., D]; output [..., H].
  """

  features: int
  reset_after: bool = False

  @nn.compact
  def __call__(self, h: Array, x: Array) -> tuple[Array, Array]:
    hidden = self.features
    xz, xr, xh = jnp.split(_dense(3 * hidden, 'x')(x), 3, axis=-1)
    hz, hr = jnp.split(_dense(2 * hidden, 'h_zr', use_bias=False)(h), 2, axis=-1)
    z = jax.nn.sigmoid(xz + hz)
    r = jax.nn.sigmoid(xr + hr)
    if self.reset_after:
      # b_hn sits inside the reset product, so it cannot be folded into x/bias.
      candidate = jnp.tanh(xh + r * _dense(hidden, 'h_h')(h))
      h_new = (1.0 - z) * candidate + z * h
    else:
      candidate = jnp.tanh(xh + _dense(hidden, 'h_h', use_bias=False)(r * h))
      h_new = (1.0 - z) * h + z * candidate
    return h_new, h_new

  def initial_carry(self, batch_shape: Sequence[int]) -> Array:
    return jnp.zeros((*batch_shape, self.features), jnp.float32)


CELLS = {'rnn': RNNCell, 'lstm': LSTMCell, 'gru': GRUCell}


class RecurrentStack(nn.Module):
  """Several cells of one kind stacked in depth, scanned over time with `nn.scan`.

  Shapes: inputs [B, T, D] -> outputs [B, T, H] (the top layer's hidden states);
  with `return_carry=True`, -> (final carry, outputs).

  The carry is a tuple with one entry per layer (layer 0 first), each that
  cell's carry: h [B, H] for 'rnn' and 'gru', and `(c, h)` for 'lstm' — cell
  state first, the reverse of torch.nn.LSTM's `(h_n, c_n)`, which also stacks
  the layers on a leading axis: torch `(h_n[l], c_n[l])` is our `carry[l][::-1]`.
  Passing a run's final carry as the next run's `initial_carry` continues the
  sequence exactly (stateful generation; truncated BPTT with
  `jax.lax.stop_gradient` on the carry between segments).
  """

  cell: str
  features: int
  num_layers: int = 1
  gru_reset_after: bool = False  # 'gru' only: torch's variant (GRUCell.reset_after)

  def _cell_class(self) -> type[nn.Module]:
    if self.cell not in CELLS:
      raise ValueError(f'unknown cell {self.cell!r}; choose one of {sorted(CELLS)}')
    return CELLS[self.cell]

  def _cell_options(self) -> dict:
    if self.gru_reset_after and self.cell != 'gru':
      raise ValueError(f'gru_reset_after applies to the gru cell, not {self.cell!r}')
    return dict(reset_after=True) if self.gru_reset_after else {}

  def initial_carry(self, batch_shape: Sequence[int]) -> tuple:
    """The all-zeros carry: a tuple of `num_layers` cell carries for batch `batch_shape`."""
    # Carries hold no params, so an unbound cell can build them.
    cell = self._cell_class()(self.features, parent=None)
    return tuple(cell.initial_carry(tuple(batch_shape)) for _ in range(self.num_layers))

  @nn.compact
  def __call__(self, inputs: Array, *, initial_carry: tuple | None = None,
               return_carry: bool = False):
    if initial_carry is None:
      initial_carry = self.initial_carry(inputs.shape[:1])
    if len(initial_carry) != self.num_layers:
      raise ValueError(f'initial_carry has {len(initial_carry)} layers, expected {self.num_layers}')
    x = inputs
    final_carry = []
    for layer in range(self.num_layers):
      scanned = nn.scan(
          self._cell_class(),
          variable_broadcast='params',
          split_rngs={'params': False},
          in_axes=1,
          out_axes=1,
      )(self.features, name=f'layer_{layer}', **self._cell_options())
      carry, x = scanned(initial_carry[layer], x)
      final_carry.append(carry)
    return (tuple(final_carry), x) if return_carry else x
