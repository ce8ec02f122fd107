"""Model families, one per file, each exporting `Model`; selected by `config.model.name`.

Every `Model` is a flax.linen module constructed as
`Model(output_size=..., **config.model without 'name')` and called as
`model.apply(variables, inputs, train=..., rngs=...) -> (logits, traces)`, with
inputs [B, T, D_in], logits [B, T, output_size] and `traces` a dict of per-step
arrays [B, T, ...] for inspection (e.g. NTM read/write weightings); models with
nothing to show return an empty dict.
"""

from __future__ import annotations

import importlib
import pkgutil

import flax.linen as nn

from memflax import extensions


def available() -> list[str]:
  """Names of all model families (one module each in this package)."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith('_'))


def model_class(name: str) -> type[nn.Module]:
  """The Model of family `name`: a module of this package, or a dotted path to a module of
  the user's exporting `Model` (memflax.extensions)."""
  if extensions.is_external(name):
    return extensions.load(name, 'Model', 'model')
  if name not in available():
    raise ValueError(f'unknown model.name {name!r}; choose one of {available()} or a dotted '
                     'path to your own module (my_models.my_model)')
  return importlib.import_module(f'{__name__}.{name}').Model


def build(model_config, output_size: int) -> nn.Module:
  """Instantiates `config.model` for a task whose targets have `output_size` channels."""
  kwargs = {k: v for k, v in dict(model_config).items() if k != 'name'}
  return model_class(model_config.name)(output_size=output_size, **kwargs)
