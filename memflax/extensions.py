"""Models and tasks that live outside memflax: `model.name` or `task.name` given as a dotted
module path (`my_models.gated_memory`) names a module of the user's that exports `Model`
(or `Task`), exactly like the files in memflax/models and memflax/tasks.

The module is looked up on sys.path and, failing that, from the directory the command runs
in: `python /path/to/memflax/train.py` puts only the script's own directory on sys.path, and
a user should not have to remember PYTHONPATH=. to use the file beside their config.
"""

from __future__ import annotations

import importlib
import os
import sys


def is_external(name: str) -> bool:
  return '.' in name


def load(name: str, attribute: str, kind: str):
  """`attribute` of module `name`; ValueError (one line) if either is missing."""
  try:
    module = _import(name)
  except ModuleNotFoundError as e:
    raise ValueError(f'{kind}.name {name!r}: no module {e.name!r} on the Python path or in '
                     f'{os.getcwd()}') from None
  if not hasattr(module, attribute):
    raise ValueError(f'{kind}.name {name!r}: module {module.__file__} defines no {attribute}')
  return getattr(module, attribute)


def _import(name: str):
  try:
    return importlib.import_module(name)
  except ModuleNotFoundError as e:
    cwd = os.getcwd()
    if cwd in sys.path or not name.startswith(e.name or '\0'):
      raise  # not the user's module that is missing, or nothing more to try
    sys.path.append(cwd)
    return importlib.import_module(name)
