"""A real two-process run: jax.distributed on 127.0.0.1 with gloo CPU collectives."""

import subprocess
import sys

import numpy as np
import portpicker
import pytest

from conftest import REPO, cli_env, read_metrics


@pytest.mark.slow
def test_two_processes_train_to_identical_parameters(tmp_path):
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen([sys.executable, str(REPO / 'tests' / 'multiprocess_worker.py'),
                             str(port), str(i), str(tmp_path)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outputs
  runs = [np.load(tmp_path / f'params_process{i}.npz') for i in range(2)]
  for run in runs:
    assert int(run['devices']) == 2 and int(run['processes']) == 2
  leaves = [k for k in runs[0].files if k.startswith('leaf')]
  assert leaves
  for key in leaves:
    np.testing.assert_array_equal(runs[0][key], runs[1][key])
  # Process 0 alone wrote metrics; both took part in the checkpoints.
  assert max(r['step'] for r in read_metrics(tmp_path)) == 6
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()) == ['3', '6']
