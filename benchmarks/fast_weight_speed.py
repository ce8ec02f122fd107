"""Delta-rule memory: the chunkwise-parallel form against the recurrent form and against
softmax attention, forward + backward, as the sequence grows.

  python benchmarks/fast_weight_speed.py --out benchmarks/results/fast_weight_speed.json
  python benchmarks/fast_weight_speed.py --lengths 256,2048 --repeats 3 --out /tmp/fw.json

One head group of the mixer's core (memflax/nn/delta_rule.py), batch 1, 4 heads of width
64 (a 256-wide model), keys L2-normalised: the gradient of Σ o ⊙ c (a fixed random c) with
respect to q, k, v, β (and g for the gated form), i.e. everything a training step does in
the core. Forms:
  delta_chunk        chunkwise (UT transform, --chunk steps per chunk), delta rule
  gated_chunk        the same with a decay gate (Gated DeltaNet)
  delta_recurrent    lax.scan over time, delta rule
  linear_chunk       chunkwise linear attention (no system to solve)
  softmax            causal softmax attention (jax.nn.dot_product_attention, XLA)
Rows {"T", "form", "ms" (median of --repeats), "ms_all", "compile_s", "device", ...}; a
form that runs out of memory gets "oom": true. The summary gives, per form, the speed-up
of delta_chunk over it at each T and the crossover length where delta_chunk becomes
faster than softmax attention.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memflax import progress_log  # noqa: E402
from memflax.nn import delta_rule  # noqa: E402

BATCH, HEADS, WIDTH = 1, 4, 64
FORMS = ('delta_chunk', 'gated_chunk', 'delta_recurrent', 'linear_chunk', 'softmax')


def inputs(length: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  shape = (BATCH, HEADS, length, WIDTH)
  q, k, v, c = (rng.standard_normal(shape).astype(np.float32) for _ in range(4))
  k /= np.linalg.norm(k, axis=-1, keepdims=True)
  q /= np.linalg.norm(q, axis=-1, keepdims=True) * np.sqrt(WIDTH)
  beta = rng.uniform(0.0, 1.0, shape[:-1]).astype(np.float32)
  g = -rng.uniform(0.0, 0.1, shape[:-1]).astype(np.float32)
  return tuple(jnp.asarray(x) for x in (q, k, v, beta, g, c))


def core(form: str, chunk: int):
  """(q, k, v, beta, g) -> o [B, H, T, d] for one form."""
  if form == 'softmax':
    def attend(q, k, v, beta, g):
      del beta, g
      # dot_product_attention takes [B, T, H, d] and scales by 1/√d itself.
      out = jax.nn.dot_product_attention(*(jnp.swapaxes(x, 1, 2) for x in (q, k, v)),
                                         is_causal=True)
      return jnp.swapaxes(out, 1, 2)
    return attend
  rule = 'linear' if form.startswith('linear') else 'delta'
  gated = form.startswith('gated')

  def memory(q, k, v, beta, g):
    g = g if gated else jnp.zeros_like(g)
    if form.endswith('recurrent'):
      return delta_rule.recurrent(q, k, v, beta, g, rule=rule)[0]
    return delta_rule.chunkwise(q, k, v, beta, g, chunk, rule=rule)[0]
  return memory


def measure(form: str, length: int, chunk: int, repeats: int) -> dict:
  q, k, v, beta, g, c = inputs(length)
  fn = core(form, chunk)
  argnums = (0, 1, 2, 3, 4) if form == 'gated_chunk' else (0, 1, 2, 3)

  def loss(q, k, v, beta, g):
    return jnp.sum(fn(q, k, v, beta, g) * c)

  step = jax.jit(jax.grad(loss, argnums=argnums))
  row = dict(T=length, form=form, chunk=chunk if 'chunk' in form else None, batch=BATCH,
             heads=HEADS, head_dim=WIDTH, device=device_description(),
             backend=jax.default_backend(), jax_version=jax.__version__)
  try:
    start = time.perf_counter()
    compiled = step.lower(q, k, v, beta, g).compile()
    row['compile_s'] = round(time.perf_counter() - start, 3)
    jax.block_until_ready(compiled(q, k, v, beta, g))
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(compiled(q, k, v, beta, g))
      times.append(1e3 * (time.perf_counter() - start))
  except Exception as error:  # noqa: BLE001 - out of memory is recorded, not fatal
    if 'RESOURCE_EXHAUSTED' not in str(error) and 'Out of memory' not in str(error):
      raise
    return dict(row, oom=True)
  try:
    memory = compiled.memory_analysis()
    row['temp_bytes'] = int(memory.temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    row['temp_bytes'] = None
  return dict(row, ms=round(statistics.median(times), 4), ms_all=[round(t, 4) for t in times],
              oom=False)


def device_description() -> str:
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return f'{platform.processor() or platform.machine()} CPU'
  return device.device_kind


def summarise(rows: list[dict]) -> dict:
  ms = {(r['form'], r['T']): r.get('ms') for r in rows if not r.get('oom')}
  lengths = sorted({r['T'] for r in rows})
  speedups = {}
  for form in FORMS:
    if form == 'delta_chunk':
      continue
    speedups[form] = {str(t): round(ms[(form, t)] / ms[('delta_chunk', t)], 2)
                      for t in lengths if ms.get((form, t)) and ms.get(('delta_chunk', t))}
  faster = [t for t in lengths if ms.get(('softmax', t)) and ms.get(('delta_chunk', t))
            and ms[('delta_chunk', t)] < ms[('softmax', t)]]
  return dict(delta_chunk_speedup_over=speedups,
              crossover_T_vs_softmax=faster[0] if faster else None)


def plot(rows: list[dict], path: Path) -> Path:
  """ms against T per form, log-log, next to the JSON (`path` with .png)."""
  from memflax import viz
  curves = {}
  for r in rows:
    if r.get('ms') is not None and not r.get('oom'):
      curves.setdefault(r['form'], []).append((r['T'], r['ms']))
  device = rows[0].get('device', '') if rows else ''
  return viz.plot_curves({f: sorted(c) for f, c in curves.items()}, path.with_suffix('.png'),
                         xlabel='sequence length T', ylabel='ms (forward + backward)',
                         title=f'Delta rule and attention, batch 1 × 4 heads ({device})',
                         log_x=True, log_y=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--lengths', default='256,512,1024,2048,4096,8192')
  parser.add_argument('--forms', default=','.join(FORMS))
  parser.add_argument('--chunk', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--replot', action='store_true',
                      help='only draw the plot of the rows already in --out')
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  if args.replot:
    print(plot(json.loads(Path(args.out).read_text())['rows'], Path(args.out)))
    return
  lengths = [int(t) for t in args.lengths.split(',')]
  forms = args.forms.split(',')
  unknown = set(forms) - set(FORMS)
  if unknown:
    parser.error(f'unknown forms {sorted(unknown)}; choose from {FORMS}')
  jobs = [(form, t) for t in lengths for form in forms]
  rows = []
  for form, length in progress_log.bar(jobs, len(jobs), 'forms × lengths'):
    row = measure(form, length, args.chunk, args.repeats)
    print(json.dumps({k: v for k, v in row.items() if k != 'ms_all'}), flush=True)
    rows.append(row)
  summary = summarise(rows)
  print(json.dumps(summary), flush=True)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(command=' '.join(sys.argv), rows=rows, summary=summary),
                            indent=1) + '\n')
  plot(rows, out)


if __name__ == '__main__':
  main()
