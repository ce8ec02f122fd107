"""Parameters of a module's shapes drawn in NumPy, for tests that hold for any parameters.

Jitting `init` compiles the PRNG, seconds on a busy CPU; eval_shape plus NumPy costs none.
"""

import jax
import numpy as np


def random_params(module, *inputs, seed: int = 0, scale: float = 0.5):
  """The 'params' tree of `module.init(key, *inputs)`, entries drawn from N(0, scale²)."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
