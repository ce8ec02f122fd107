"""Continual learning for a byte-level LSTM LM: corpus A (standard-library packages) then corpus B (others).

  python train.py --config=configs/cl_lm_corpora.py --workdir=runs/cl_lm
  python train.py --config=configs/cl_lm_corpora.py --workdir=runs/cl_lm_l2 \
      --config.continual.strategy=l2

Both tasks are byte_lm (256 channels in and out: the padded interface pads nothing); each
names its corpus in continual.task_fields.<key>.data_paths, which replaces data.paths for
that task (memflax.continual.config.STDLIB_HALVES). "Accuracy" is next-byte accuracy on
the first eval.num_sequences validation windows of each corpus; forgetting is what
training on B costs A. num_train_steps is per corpus.
"""

from memflax.continual.config import compose_sequence, stdlib_halves


def get_config(variant: str = ''):
  return compose_sequence('lstm', ('stdlib_a', 'stdlib_b'), variant, task_fields=stdlib_halves(variant),
                          continual=dict(replay_buffer_size=128, fisher_sequences=64, l2_lambda=0.01),
                          num_train_steps=750, eval_every_steps=250, eval_sequences=256)
