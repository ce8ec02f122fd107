"""memflax: train and study differentiable memory in JAX/Flax."""

__version__ = '0.1.0'
