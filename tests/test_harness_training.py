"""A few hundred steps of the real harness cut the copy loss (LSTM, GRU, NTM)."""

import pytest

from configs.gru_copy import get_config as gru_config
from configs.lstm_copy import get_config as lstm_config
from configs.ntm_copy import get_config as ntm_config
from conftest import read_metrics
from memflax.train import train_and_evaluate


@pytest.mark.parametrize('get_config', [lstm_config, gru_config, ntm_config],
                         ids=['lstm', 'gru', 'ntm'])
def test_short_run_cuts_the_loss(tmp_path, get_config):
  config = get_config('tiny')
  config.update(num_train_steps=300, batch_size=16, learning_rate=3e-3, eval_every_steps=300,
                checkpoint_every_steps=300)
  state = train_and_evaluate(config, tmp_path)
  assert int(state.step) == 300
  rows = [r for r in read_metrics(tmp_path) if 'loss' in r]
  first, last = rows[0]['loss'], sum(r['loss'] for r in rows[-3:]) / 3
  assert first > 0.65  # starts near chance (ln 2)
  assert last < 0.75 * first, (first, last)
  evals = [r for r in read_metrics(tmp_path) if 'eval_bit_errors_per_seq' in r]
  assert evals[-1]['eval_bit_errors_per_seq'] < 0.3 * 8 * 3  # < 30% of bits at mean length 3
