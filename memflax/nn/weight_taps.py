"""Weight gradients of a scanned layer as one matmul after the scan, not one per step.

Autodiff of `lax.scan` accumulates the gradient of a weight the scan closes over inside
the backward loop: every step adds its outer product `x_tᵀ g_t` ([D,F]) to a carried
[D,F] sum. At batch 1 that is a full read and write of the weight per time step for a
rank-1 update (the NTM controller's [129,400] kernel: a tenth of the copy step). The
same gradient is `Xᵀ G` over all steps at once, with X [T·B,D] the layer's inputs and
G [T·B,F] the gradients of its outputs.

Taps get X and G out of the backward loop:

  taps = weight_taps(kernel, x_shape, y_shape)        # outside the scan: zeros,
                                                      # with a time axis, scanned over
  y_t = tapped_matmul(x_t, kernel, *taps_t)           # inside: x_t @ kernel

In the backward pass a step's cotangents for its two taps are x_t and g_t = ∂L/∂y_t;
the scan stacks them like any per-step input's, and `weight_taps`' backward turns the
stacks into Σ_t x_tᵀ g_t, the kernel's gradient. The kernel itself is used under
stop_gradient inside, so nothing accumulates in the loop. (The x_t "cotangent" is not
linear in the loss, so taps are for first-order gradients, which is all training takes.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def weight_taps(kernel: Array, x_shape: tuple, y_shape: tuple) -> tuple[Array, Array]:
  """kernel [D,F] -> zeros of x_shape [...,D] and y_shape [...,F]: one slice per use of
  `tapped_matmul`. Gradient: einsum of the two stacks' cotangents over all leading axes."""
  return jnp.zeros(x_shape, kernel.dtype), jnp.zeros(y_shape, kernel.dtype)


def _weight_taps_fwd(kernel, x_shape, y_shape):
  return weight_taps(kernel, x_shape, y_shape), None


def _weight_taps_bwd(x_shape, y_shape, _, cotangents):
  inputs, output_grads = cotangents
  return (jnp.einsum('...d,...f->df', inputs, output_grads),)


weight_taps.defvjp(_weight_taps_fwd, _weight_taps_bwd)


@jax.custom_vjp
def _tapped(x: Array, kernel: Array, x_tap: Array, y_tap: Array) -> Array:
  return x @ kernel


def _tapped_fwd(x, kernel, x_tap, y_tap):
  return x @ kernel, (x, kernel)


def _tapped_bwd(residuals, g):
  x, kernel = residuals
  return g @ kernel.T, None, x, g


_tapped.defvjp(_tapped_fwd, _tapped_bwd)


def tapped_matmul(x: Array, kernel: Array, x_tap: Array, y_tap: Array) -> Array:
  """`x @ kernel` (x [...,D], kernel [D,F] -> [...,F]) whose kernel gradient leaves
  through the taps (x_tap like x, y_tap like the output) instead of the kernel."""
  return _tapped(x, jax.lax.stop_gradient(kernel), x_tap, y_tap)


def tapped_dot_general(taps: tuple[Array, Array] | None):
  """A `dot_general` for flax.linen.Dense: the plain one without taps, else one that
  routes the kernel's gradient through `taps` (a 2-D input, contraction on its last axis,
  which is what Dense asks for)."""
  if taps is None:
    return None

  def dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
    del dimension_numbers, precision, preferred_element_type  # Dense's: x's last with kernel's first
    return tapped_matmul(x, kernel, *taps)

  return dot_general
