"""Training hooks: the progress line and the guard against non-finite values."""

import os
import time

import numpy as np
import tensorflow.compat.v1 as tf

from runner import cli

TRAIN_TENSOR_PREFIX = 'train/'


def train_tensors(graph):
  """The scalar tensors the spec builder names 'train/<name>', by name.

  Under a tf.distribute strategy with several replicas in this process, each
  replica's model_fn names its own copies ('train/loss_1' on the second
  device); only the first replica's, those on the device of 'train/loss',
  are returned.
  """
  tensors = {}
  for op in graph.get_operations():
    if op.name.startswith(TRAIN_TENSOR_PREFIX) and op.type == 'Identity':
      tensor = op.outputs[0]
      if tensor.shape.ndims == 0:
        tensors[op.name[len(TRAIN_TENSOR_PREFIX):]] = tensor
  if 'loss' in tensors:
    device = tensors['loss'].device
    tensors = {k: t for k, t in tensors.items() if t.device == device}
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


class FiniteGuardHook(tf.train.SessionRunHook):
  """Stops training at the first non-finite loss, before it is checkpointed.

  Every step it fetches the scalars the spec builder names `train/<name>`
  (`loss`, each loss term, `lr`; a few scalars, so cheap). When one is NaN
  or Inf it raises cli.RunError naming the step, every value and the last
  checkpoint on disk. At the steps where the CheckpointSaverHook saves
  (multiples of `save_every`, and `stop_step`, the end of this train call)
  it also checks that every float variable is finite, since a step can
  return a finite loss and still leave overflowed weights.

  Use it through `guarded_saver(...)`, which puts it before its own
  CheckpointSaverHook: see there why the bad state is then never saved.

  Args:
    model_dir: where checkpoints go (for the message).
    save_every: the checkpoint interval in steps.
    stop_step: the step this train call stops at.
  """

  def __init__(self, model_dir, save_every, stop_step):
    self._model_dir = model_dir
    self._every = max(1, int(save_every))
    self._stop_step = stop_step

  def begin(self):
    self._step_tensor = tf.train.get_global_step()
    self._tensors = train_tensors(tf.get_default_graph())
    if 'loss' not in self._tensors:
      raise ValueError('the training graph has no train/loss tensor')
    checks = [tf.reduce_all(tf.is_finite(v)) for v in tf.global_variables()
              if v.dtype.base_dtype.is_floating]
    self._weights_finite = tf.reduce_all(tf.stack(checks)) if checks else (
        tf.constant(True))

  def before_run(self, run_context):
    del run_context
    return tf.train.SessionRunArgs(self._tensors)

  def after_run(self, run_context, run_values):
    values = run_values.results
    session = run_context.session
    step = int(session.run(self._step_tensor))
    bad = sorted(k for k, v in values.items() if not np.isfinite(v))
    if bad:
      name = 'loss' if 'loss' in bad else bad[0]
      what = '%s is %s at step %d' % (name, _format(values[name]), step)
    elif ((step % self._every == 0 or step >= self._stop_step) and
          not session.run(self._weights_finite)):
      name = None
      what = 'weights are not finite after step %d' % step
    else:
      return
    terms = ', '.join('%s %s' % (k, _format(values[k]))
                      for k in sorted(values) if k != name)
    checkpoint = tf.train.latest_checkpoint(self._model_dir)
    kept = ('the last good checkpoint is %s' % os.path.basename(checkpoint)
            if checkpoint else 'no checkpoint was saved')
    raise cli.RunError('%s (%s); %s' % (what, terms, kept))


def guarded_saver(model_dir, save_every, stop_step):
  """[FiniteGuardHook, CheckpointSaverHook] for `Estimator.train(hooks=...)`.

  Why the non-finite state is never saved: hooks run in list order, and the
  Estimator adds no CheckpointSaverHook of its own when one is passed in, so
  the guard's after_run raises before the saver's after_run of the same
  step (Estimator's own saver is a chief-only hook, which
  MonitoredTrainingSession runs before every hook passed to train()); and
  MonitoredSession skips every hook's `end()`, where the saver writes the
  final checkpoint, when the session ends with an exception. The saver uses
  the Estimator's Saver (keep_checkpoint_max) from the SAVERS collection.
  """
  return [FiniteGuardHook(model_dir, save_every, stop_step),
          tf.estimator.CheckpointSaverHook(model_dir, save_steps=save_every)]


def _format(value):
  return '%.4g' % value


def _hms(seconds):
  seconds = int(seconds)
  return '%d:%02d:%02d' % (seconds // 3600, seconds // 60 % 60, seconds % 60)
