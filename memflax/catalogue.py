"""What there is to train: model families, tasks, and the config files with their variants
(`python train.py --list`)."""

from __future__ import annotations

import ast
from pathlib import Path

from memflax import models, tasks
from memflax.config_defaults import VARIANTS

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'


def _first_docstring_line(path: Path) -> str:
  try:
    doc = ast.get_docstring(ast.parse(path.read_text()))
  except (OSError, SyntaxError, ValueError):
    return ''
  return doc.strip().splitlines()[0] if doc else ''


def config_files(config_dir: Path = CONFIG_DIR) -> list[Path]:
  """Runnable config files (each defines get_config), sorted by name."""
  return sorted(p for p in config_dir.glob('*.py')
                if not p.name.startswith('_') and 'def get_config' in p.read_text())


def describe(config_dir: Path = CONFIG_DIR) -> str:
  """A listing for a terminal: one line per model, task and config."""
  lines = ['models: ' + ', '.join(models.available()),
           'tasks:  ' + ', '.join(tasks.available()),
           f'configs (python train.py --config=configs/NAME.py[:{"|".join(VARIANTS)}] '
           '--workdir=DIR):']
  files = config_files(config_dir)
  width = max((len(p.name) for p in files), default=0)
  for path in files:
    lines.append(f'  {path.name:<{width}}  {_first_docstring_line(path)}')
  lines.append('variants: ' + ', '.join(f'{name}: {what}' for name, what in VARIANTS.items()))
  return '\n'.join(lines)
