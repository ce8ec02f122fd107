"""Every notebook in notebooks/ runs top to bottom on CPU (nbclient, a kernel on this
interpreter, the notebook's directory as cwd), and the committed notebooks carry no outputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / 'notebooks'
PATHS = sorted(NOTEBOOKS.glob('*.ipynb'))


def kernel_manager() -> KernelManager:
  """A `python3` kernel on sys.executable whatever kernel specs the machine has: with no
  kernel directories to search, jupyter_client falls back to ipykernel's own spec, which
  runs the interpreter it is imported from (a user's ~/.local/share/jupyter/kernels/python3
  could name another Python without these packages)."""
  return KernelManager(kernel_name='python3', kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def execute(nb, cwd: Path, env: dict | None = None):
  client = NotebookClient(nb, km=kernel_manager(), timeout=600,
                          resources={'metadata': {'path': str(cwd)}})
  return client.execute(**({} if env is None else {'env': env}))  # env=None would be used as-is


def kernel_env(runs: Path) -> dict:
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)  # one CPU device, as a user's laptop has
  env['MEMFLAX_NOTEBOOK_RUNS'] = str(runs)  # the notebooks' runs go to pytest's tmp_path
  return env


def test_there_are_notebooks():
  assert {p.name for p in PATHS} >= {'quickstart.ipynb', 'continual_learning.ipynb',
                                     'memory_zoo.ipynb'}


@pytest.mark.parametrize('path', PATHS, ids=lambda p: p.stem)
def test_committed_notebooks_have_no_outputs(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == 'code':
      assert cell.outputs == [] and cell.execution_count is None, f'{path.name} cell {i}'


def test_kernel_runs_this_interpreter_in_the_given_directory(tmp_path):
  nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
      'import os, sys\nprint(sys.executable)\nprint(os.getcwd())')])
  out = execute(nb, tmp_path).cells[0].outputs[0]['text'].split()
  assert out == [sys.executable, str(tmp_path)]


@pytest.mark.slow
@pytest.mark.parametrize('path', PATHS, ids=lambda p: p.stem)
def test_notebook_runs_on_cpu(path, tmp_path):
  nb = nbformat.read(path, as_version=4)
  before = sorted(NOTEBOOKS.rglob('*'))
  executed = execute(nb, path.parent, kernel_env(tmp_path))  # raises CellExecutionError
  errors = [o for c in executed.cells if c.cell_type == 'code' for o in c.outputs
            if o.output_type == 'error']
  assert not errors
  # Nothing written beside the notebooks: runs and figures went to MEMFLAX_NOTEBOOK_RUNS.
  assert sorted(NOTEBOOKS.rglob('*')) == before
