"""One command, 1 or 8 devices: same global batch and seed give the same training."""

import pytest

from conftest import read_metrics, run_cli


def _loss_at_50(workdir, devices):
  proc = run_cli('train.py', '--config=configs/ntm_copy.py:tiny', f'--workdir={workdir}',
                 '--config.num_train_steps=50', '--config.batch_size=16',
                 '--config.log_every_steps=50', '--config.eval.num_sequences=64',
                 devices=devices)
  assert proc.returncode == 0, proc.stderr
  assert f'{devices} device(s)' in proc.stdout
  rows = [r for r in read_metrics(workdir) if r['step'] == 50 and 'loss' in r]
  return rows[0]


@pytest.mark.slow
def test_eight_devices_match_one(tmp_path):
  one = _loss_at_50(tmp_path / 'one', devices=1)
  eight = _loss_at_50(tmp_path / 'eight', devices=8)
  assert one['loss'] < 0.69  # it trained, so the comparison is not between two no-ops
  assert eight['loss'] == pytest.approx(one['loss'], rel=1e-4)
  assert eight['grad_norm'] == pytest.approx(one['grad_norm'], rel=1e-3)
  assert eight['param_norm'] == pytest.approx(one['param_norm'], rel=1e-5)


class _Step:
  """A dispatched step's output that records when the host waited on it."""

  def __init__(self, index, waited):
    self.index, self.waited = index, waited

  def block_until_ready(self):
    self.waited.append(self.index)
    return self


@pytest.mark.parametrize('limit, expected', [(2, [0, 1, 2]), (1, [0, 1, 2, 3]), (None, [])])
def test_dispatch_window_waits_on_the_oldest_beyond_its_bound(limit, expected):
  # The bound that keeps several CPU devices out of XLA's all-reduce deadlock (train.py).
  from memflax.train import DispatchWindow
  waited = []
  window = DispatchWindow(limit)
  for i in range(5):
    window.add(_Step(i, waited))
  assert waited == expected
