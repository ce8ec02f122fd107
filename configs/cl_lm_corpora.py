"""Continual learning for a byte-level LSTM LM: Python code, then codec tables.

  python train.py --config=configs/cl_lm_corpora.py --workdir=runs/cl_lm
  python train.py --config=configs/cl_lm_corpora.py --workdir=runs/cl_lm_replay \
      --config.continual.strategy=replay

Both tasks are byte_lm (256 channels in and out: the padded interface pads nothing), each
on its own files of the running Python's standard library, named in
continual.task_fields.<key>.data_paths (which replaces data.paths for that task):
`code` is six packages of ordinary code, `codecs` the `encodings` package, mostly mapping
tables (memflax.continual.config.CODE_THEN_CODECS). Two halves of ordinary code forget
nothing (the second half improves the first), hence the second corpus; point data_paths at
your own files for other sequences. "Accuracy" is next-byte accuracy on the first
eval.num_sequences validation windows of each corpus; forgetting is what training on the
codecs costs the code. num_train_steps is per corpus.
"""

from memflax.continual.config import compose_sequence, stdlib_code_then_codecs


def get_config(variant: str = ''):
  return compose_sequence('lstm', ('code', 'codecs'), variant,
                          task_fields=stdlib_code_then_codecs(variant),
                          continual=dict(replay_buffer_size=128, fisher_sequences=64, l2_lambda=0.01),
                          num_train_steps=750, eval_every_steps=250, eval_sequences=256)
