"""Training hooks: the progress line."""

import time

import tensorflow.compat.v1 as tf

TRAIN_TENSOR_PREFIX = 'train/'


def train_tensors(graph):
  """The scalar tensors the spec builder names 'train/<name>', by name."""
  tensors = {}
  for op in graph.get_operations():
    if op.name.startswith(TRAIN_TENSOR_PREFIX) and op.type == 'Identity':
      tensor = op.outputs[0]
      if tensor.shape.ndims == 0:
        tensors[op.name[len(TRAIN_TENSOR_PREFIX):]] = tensor
  return tensors


class ProgressHook(tf.train.SessionRunHook):
  """Prints step, labeled img/s, total img/s, loss terms, lr and ETA.

  Args:
    every_steps: interval between lines.
    labeled_per_step: labeled images consumed by one step.
    total_per_step: images (all views) through the network in one step.
    last_step: the step training stops at, for the ETA.
    printer: where lines go (print by default).
  """

  def __init__(self, every_steps, labeled_per_step, total_per_step, last_step,
               printer=print):
    self._every = max(1, int(every_steps))
    self._labeled = labeled_per_step
    self._total = total_per_step
    self._last_step = last_step
    self._print = printer

  def begin(self):
    self._step_tensor = tf.train.get_global_step()
    self._tensors = train_tensors(tf.get_default_graph())
    self._mark = None
    self._step = None

  def after_create_session(self, session, coord):
    del coord
    self._step = int(session.run(self._step_tensor))
    self._mark = (self._step, time.time())

  def _logs_next(self):
    """True when the coming run is a step that prints a line."""
    if self._step is None:
      return False
    coming = self._step + 1
    return coming % self._every == 0 or coming >= self._last_step

  def before_run(self, run_context):
    del run_context
    fetches = {}
    if self._logs_next():
      fetches['terms'] = self._tensors
    return tf.train.SessionRunArgs(fetches)

  def after_run(self, run_context, run_values):
    # Read after the run: a fetch in the same run may see either side of the
    # step's increment. Reading a variable consumes no input.
    step = int(run_context.session.run(self._step_tensor))
    self._step = step
    now = time.time()
    terms = run_values.results.get('terms')
    if terms is None or step <= self._mark[0]:
      return
    mark_step, mark_time = self._mark
    seconds = (now - mark_time) / (step - mark_step)
    text = ' '.join('%s %.4g' % (k, terms[k]) for k in sorted(terms))
    eta = seconds * max(0, self._last_step - step)
    self._print('step %d/%d  %.1f labeled img/s  %.1f img/s  %s  eta %s'
                % (step, self._last_step, self._labeled / seconds,
                   self._total / seconds, text, _hms(eta)))
    self._mark = (step, now)


def _hms(seconds):
  seconds = int(seconds)
  return '%d:%02d:%02d' % (seconds // 3600, seconds // 60 % 60, seconds % 60)
