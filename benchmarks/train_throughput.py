"""Training throughput of a config, compile time reported apart from step time.

  python benchmarks/train_throughput.py --out benchmarks/results/ntm_copy_throughput.json
  python benchmarks/train_throughput.py --batch_sizes 32 --set length_buckets=1 --out /tmp/t.json

For each batch size: compile every training shape of the run once (timed; a run with
length buckets has one per bucket), run `--warmup` steps, then time `--steps`
consecutive training steps `--repeats` times and report the median. With length buckets
each bucket's step is warmed up and timed that way on its own, and ms_per_step is their
mean weighted by how often training draws each bucket: the long-run rate. (Timing a
window of the real sequence of buckets instead depends on which buckets the window
happens to hold: copy's 3 buckets averaged 26.7 padded steps over steps 20–59 of seed 0
against 27.7 expected.) Each row also carries XLA's FLOP count and buffer sizes of the
longest shape's step (`cost_analysis`, `memory_analysis`), the process's peak resident
memory so far and its page faults per timed step (with MEMFLAX_HUGE_PAGES=0 the script
runs without huge pages: memflax/huge_pages.py) and `cores`, the cores the process may use:
one when every batch size asked for runs on one device, as in train.py
(memflax/cpu_cores.py; MEMFLAX_ONE_CORE=0 leaves it free). Writes a JSON list of rows.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memflax import cpu_cores, huge_pages, length_buckets, progress_log  # noqa: E402
from memflax.train import DispatchWindow, Trainer  # noqa: E402


def load_config(path: str, overrides: dict | None = None):
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in (overrides or {}).items():
    section = config
    *parents, leaf = key.split('.')
    for name in parents:
      section = section[name]
    section[leaf] = value
  return config


def parse_overrides(items: list[str]) -> dict:
  """['length_buckets=1', 'model.memory_size=64'] -> {'length_buckets': 1, ...}."""
  out = {}
  for item in items:
    key, _, text = item.partition('=')
    try:
      out[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      out[key] = text
  return out


def _analysis(compiled) -> dict:
  """FLOPs and buffer bytes XLA reports for one compiled step (None where unsupported)."""
  out = {}
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    out['xla_flops'] = float(cost.get('flops', 0.0))
  except Exception:  # noqa: BLE001 - not every backend reports costs
    out['xla_flops'] = None
  try:
    memory = compiled.memory_analysis()
    out['xla_temp_bytes'] = int(memory.temp_size_in_bytes)
    out['xla_argument_bytes'] = int(memory.argument_size_in_bytes)
    out['xla_output_bytes'] = int(memory.output_size_in_bytes)
  except Exception:  # noqa: BLE001
    out['xla_temp_bytes'] = None
  return out


def device_description(count: int | None = None) -> str:
  """'2 × x86_64 CPU': `count` devices (default: all) of the first device's kind."""
  device = jax.devices()[0]
  kind = device.device_kind
  if device.platform == 'cpu':
    kind = f'{platform.processor() or platform.machine()} CPU'
  return f'{jax.device_count() if count is None else count} × {kind}'


def measure(config_path: str, batch_size: int, steps: int, warmup: int, repeats: int,
            overrides: dict | None = None) -> dict:
  config = load_config(config_path, overrides)
  config.batch_size = batch_size
  trainer = Trainer(config)
  state = jax.block_until_ready(trainer.init_state())
  start = time.perf_counter()
  compiled = trainer.compile_train_steps(state, 0)
  compile_s = time.perf_counter() - start
  longest = compiled[max(compiled, key=lambda b: -1 if b is None else b)]

  def run(step_fn, count):
    # Bounded like the training loop: several CPU devices with an unbounded queue
    # deadlock in an all-reduce.
    nonlocal state
    in_flight = DispatchWindow()
    for _ in range(count):
      state, metrics = step_fn(state)
      in_flight.add(metrics)
    jax.block_until_ready(metrics)

  weights = ({None: 1.0} if trainer.buckets is None else
             dict(enumerate(length_buckets.bucket_probabilities(trainer.buckets))))
  timings, by_bucket, faults = {}, {}, 0
  for bucket in weights:
    run(compiled[bucket], warmup)
    timings[bucket] = []
    faults -= resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
      start = time.perf_counter()
      run(compiled[bucket], steps)
      timings[bucket].append((time.perf_counter() - start) / steps)
    faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    by_bucket[bucket] = statistics.median(timings[bucket])
  per_step = sum(weights[b] * by_bucket[b] for b in weights)
  buckets = {} if trainer.buckets is None else dict(
      buckets=trainer.buckets, bucket_probabilities=list(weights.values()),
      ms_per_step_by_bucket=[round(1e3 * by_bucket[b], 3) for b in weights])
  return dict(model=config.model.name, config=config_path, overrides=overrides or {},
              batch_size=batch_size, sequences_per_sec=batch_size / per_step,
              ms_per_step=1e3 * per_step, compile_s=compile_s, compiled_shapes=len(compiled),
              steps_timed=steps, repeats=repeats, **buckets,
              ms_per_step_all=[[round(1e3 * t, 3) for t in timings[b]] for b in weights]
              if trainer.buckets else [round(1e3 * t, 3) for t in timings[None]],
              devices=trainer.mesh.devices.size, backend=jax.default_backend(),
              device=device_description(trainer.mesh.devices.size), jax_version=jax.__version__,
              num_params=sum(x.size for x in jax.tree.leaves(state.params)),
              peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              # Page faults per timed step (memflax/huge_pages.py: fresh step buffers).
              minor_faults_per_step=faults / (steps * repeats * len(weights)),
              huge_pages=huge_pages.requested(),
              **_analysis(longest))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/ntm_copy.py')
  parser.add_argument('--batch_sizes', default='1,8,32')
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--warmup', type=int, default=20)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='config override, e.g. length_buckets=1 (repeatable)')
  parser.add_argument('--out', required=True, help='JSON file to write')
  args = parser.parse_args()
  overrides = parse_overrides(args.set)
  rows = []
  batch_sizes = [int(b) for b in args.batch_sizes.split(',')]
  # As train.py: a process whose runs all span one device keeps one device and one core.
  config = load_config(args.config, overrides)
  run_rows = []
  for batch_size in batch_sizes:
    config.batch_size = batch_size
    run_rows.append(cpu_cores.run_rows(config))
  cpu_cores.use_every_core(*filter(None, run_rows))
  for batch_size in progress_log.bar(batch_sizes, len(batch_sizes), 'batch sizes'):
    row = measure(args.config, batch_size, args.steps, args.warmup, args.repeats, overrides)
    row['cores'] = len(os.sched_getaffinity(0))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()
                      if k != 'ms_per_step_all'}), flush=True)
    rows.append(row)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(rows, indent=2) + '\n')


if __name__ == '__main__':
  huge_pages.restart_with_huge_pages()  # as train.py does, so the figures are train.py's
  main()  # calls cpu_cores.use_every_core as train.py does
