"""Evaluate a trained run: python eval.py --workdir=DIR

Restores DIR's newest good checkpoint (model and task come from the config stored
in it), measures bit errors per sequence at each length of eval.lengths, writes
DIR/eval.json, and plots one sequence's memory weightings and bits as PNGs.
"""

import json
import sys
from pathlib import Path

from absl import app, flags, logging

flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
flags.DEFINE_list('lengths', None, 'Sequence lengths to test (default: the stored eval.lengths).')
flags.DEFINE_integer('num_sequences', None, 'Sequences per length (default: eval.num_sequences).')
flags.DEFINE_integer('plot_length', 40, 'Length of the sequence drawn in the PNGs.')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  from memflax import evaluate, viz

  workdir = Path(FLAGS.workdir)
  try:
    trainer, params, step = evaluate.restore(workdir)
  except evaluate.NoCheckpointError as e:
    sys.exit(f'error: {e}')
  config = trainer.config
  lengths = [int(n) for n in (FLAGS.lengths or config.eval.lengths)]
  num_sequences = FLAGS.num_sequences or config.eval.num_sequences
  results = evaluate.length_generalisation(trainer, params, lengths, num_sequences)
  (workdir / 'eval.json').write_text(json.dumps({config.task.name: results}, indent=2) + '\n')

  trace = evaluate.trace_one(trainer, params, FLAGS.plot_length)
  title = f'{config.model.name} on {config.task.name}, step {step}, length {FLAGS.plot_length}'
  pngs = [workdir / f'eval_sequence_len{FLAGS.plot_length}.png']
  viz.plot_sequence(trace, pngs[0], title)
  if 'read_weights' in trace or 'write_weights' in trace:
    pngs.append(workdir / f'eval_weightings_len{FLAGS.plot_length}.png')
    viz.plot_weightings(trace, pngs[-1], title)

  print(f'step {step}: ' + ', '.join(f'length {n}: {r["bit_errors_per_seq"]:.3f} bit errors/seq'
                                     for n, r in results.items()))
  print(f'wrote {workdir / "eval.json"} and ' + ', '.join(str(p) for p in pngs))


if __name__ == '__main__':
  app.run(main)
