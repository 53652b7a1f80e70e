"""The evaluation table: eval.py writes it, report.py and benchmarks read it.

See docs/architecture.md.
"""

RESULTS_FILE = 'eval_results.json'
ROWS = ('raw', 'ema', 'tuned_raw', 'tuned_ema')
COLUMNS = ('labeled', 'valid', 'test')


def headline(results):
  """{'row', 'column', 'accuracy'}: test accuracy of the EMA model where the
  run keeps one, else of the raw model, untuned (None when not measured)."""
  rows = results['results']
  row = 'ema' if 'ema' in rows else 'raw'
  column = 'test' if 'test' in results['counts'] else 'valid'
  return {'row': row, 'column': column,
          'accuracy': (rows.get(row) or {}).get(column)}
