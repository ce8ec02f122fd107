"""Evaluate a trained run: python eval.py --workdir=DIR

Restores DIR's newest good checkpoint (model and task come from the config stored
in it), measures the task's metrics at each size of eval.lengths (sequence length,
items stored, key-value pairs: the task's size axis, beyond training included) and
a memory profile (the headline metric from size 1 to the largest), writes
DIR/eval.json, and plots the profile and one example's bits and memory weightings.
"""

import json
from pathlib import Path

from absl import app, flags, logging

flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
flags.DEFINE_string('lengths', None, 'Comma-separated sequence lengths to test, e.g. 10,20,40 '
                    '(default: the stored eval.lengths).')
flags.DEFINE_integer('num_sequences', None, 'Sequences per length (default: eval.num_sequences); '
                     'for a language model, the validation windows scored (default: all).')
flags.DEFINE_integer('plot_length', None, 'Size of the example drawn in the PNGs (default: 40 '
                     'or the largest evaluated size, whichever is smaller).')
flags.DEFINE_integer('profile_sequences', 200, 'Sequences per point of the memory profile.')
flags.DEFINE_string('snapshot', None, 'Continual learning: evaluate snapshot <index or name> '
                    'of DIR/snapshots on every task of its sequence (writes '
                    'DIR/eval_snapshot_<name>.json).')
flags.DEFINE_string('tasks', None, 'With --snapshot: comma-separated task keys to evaluate '
                    '(default: all tasks of the sequence).')
FLAGS = flags.FLAGS


def _positive_ints(text: str, name: str) -> list[int]:
  from memflax import cli_errors
  values = []
  for item in (i.strip() for i in text.split(',') if i.strip()):
    try:
      values.append(int(item))
    except ValueError:
      cli_errors.fail(f'--{name}={text}: {item!r} is not an integer')
  if not values or min(values) < 1:
    cli_errors.fail(f'--{name}={text}: lengths must be positive integers')
  return values


def main(argv):
  from memflax import cli_errors
  if len(argv) > 1:
    cli_errors.fail(f'unexpected arguments {argv[1:]}')
  if not FLAGS.workdir:
    cli_errors.fail('--workdir is required: the workdir of a training run')
  # Every argument is checked before anything is restored or written.
  lengths = _positive_ints(FLAGS.lengths, 'lengths') if FLAGS.lengths is not None else None
  for name in ('num_sequences', 'profile_sequences', 'plot_length'):
    if FLAGS[name].value is not None and FLAGS[name].value < 1:
      cli_errors.fail(f'--{name} must be a positive integer, got {FLAGS[name].value}')
  logging.set_verbosity(logging.WARNING)
  from memflax import cpu_cores
  cpu_cores.use_every_core()  # as train.py: memflax/cpu_cores.py
  from memflax import compilation_cache
  compilation_cache.enable()
  if FLAGS.snapshot is not None:
    _evaluate_snapshot(cli_errors)
    return
  from memflax import evaluate, viz

  with cli_errors.exit_on_user_error():
    trainer, params, step = evaluate.restore(FLAGS.workdir)
  workdir = evaluate.workdir_lib.resolve(FLAGS.workdir)
  config = trainer.config
  if trainer.host_fed:
    _evaluate_language_model(evaluate, trainer, params, step, workdir)
    return
  lengths = lengths or [int(n) for n in config.eval.lengths]
  num_sequences = FLAGS.num_sequences or config.eval.num_sequences
  try:  # a size the task cannot make (e.g. more MQAR pairs than fit) is the user's error
    progress = config.log.progress
    results = evaluate.length_generalisation(trainer, params, lengths, num_sequences, progress)
    profile = evaluate.memory_profile(trainer, params, max(lengths),
                                      num_sequences=min(num_sequences, FLAGS.profile_sequences),
                                      progress=progress)
  except ValueError as e:
    cli_errors.fail(f'--lengths={",".join(map(str, lengths))}: {str(e).splitlines()[0]}')
  (workdir / 'eval.json').write_text(json.dumps({config.task.name: results,
                                                 'memory_profile': profile}, indent=2) + '\n')

  task = trainer.task
  plot_length = FLAGS.plot_length or min(40, max(lengths))
  title = f'{config.model.name} on {config.task.name}, step {step}'
  pngs = [workdir / 'eval_memory_profile.png']
  viz.plot_profile(profile, pngs[0], title)
  trace = evaluate.trace_one(trainer, params, plot_length)
  title += f', {task.size_name} {plot_length}'
  pngs.append(workdir / f'eval_sequence_len{plot_length}.png')
  viz.plot_sequence(trace, pngs[-1], title)
  if 'read_weights' in trace or 'write_weights' in trace:
    pngs.append(workdir / f'eval_weightings_len{plot_length}.png')
    viz.plot_weightings(trace, pngs[-1], title)
  if 'memory' in trace:
    pngs.append(workdir / f'eval_memory_len{plot_length}.png')
    viz.plot_memory(trace['memory'], pngs[-1], title)

  metric = task.primary_metric
  print(f'step {step}: ' + ', '.join(f'{task.size_name} {n}: {metric} {r[metric]:.3f}'
                                     for n, r in results.items()))
  print(f'wrote {workdir / "eval.json"} and ' + ', '.join(str(p) for p in pngs))


def _evaluate_language_model(evaluate, trainer, params, step, workdir):
  result = evaluate.language_model_eval(trainer, params, max_windows=FLAGS.num_sequences)
  report = {'lm': result}
  print(f'step {step}: validation {result["val_bits_per_byte"]:.3f} bits/byte, bigram baseline '
        f'{result["bigram_bits_per_byte"]:.3f} bits/byte ({result["num_windows"]} windows of '
        f'{trainer.task.seq_length} bytes)')
  if trainer.has_memory and trainer.streams:  # a kNN store: how it is filled and used
    from memflax import store_statistics, viz
    report['store'] = store_statistics.collect(trainer, params, max_windows=FLAGS.num_sequences)
    for name, block in report['store'].items():
      print(f'{name}: store {block["occupancy_mean"]:.0%} full on average (of '
            f'{block["memory_size"]:,} entries), gate per head '
            f'{" ".join(f"{g:.2f}" for g in block["gate"])}, hit score per head '
            f'{" ".join(f"{h:.2f}" for h in block["hit_score"])}')
    png = viz.plot_store_statistics(report['store'], workdir / 'eval_store.png',
                                    f'{trainer.config.model.name}, step {step}')
    print(f'wrote {png}')
  (workdir / 'eval.json').write_text(json.dumps(report, indent=2) + '\n')
  print(f'wrote {workdir / "eval.json"}')


def _evaluate_snapshot(cli_errors):
  from memflax.continual.evaluation import evaluate_snapshot
  only = [t.strip() for t in FLAGS.tasks.split(',') if t.strip()] if FLAGS.tasks else None
  with cli_errors.exit_on_user_error():
    name, results = evaluate_snapshot(FLAGS.workdir, FLAGS.snapshot, FLAGS.num_sequences, only)
    workdir = Path(FLAGS.workdir).expanduser().absolute()
  out = workdir / f'eval_snapshot_{name}.json'
  out.write_text(json.dumps({'snapshot': name, 'results': results}, indent=2) + '\n')
  for key, metrics in results.items():
    print(f'snapshot {name} on {key}: ' + ', '.join(f'{k} {v:.4g}' for k, v in metrics.items()))
  print(f'wrote {out}')


if __name__ == '__main__':
  from memflax import huge_pages
  huge_pages.restart_with_huge_pages()  # before jax is imported (memflax/huge_pages.py)
  from memflax.cli_errors import parse_flags
  app.run(main, flags_parser=parse_flags)
