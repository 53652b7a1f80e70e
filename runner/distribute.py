"""tf.distribute for launch/train.py: strategy, cluster layout, Estimator.

`--distribution_strategy` off, mirrored, multi_worker_mirrored or
parameter_server; what keeps the model_fns strategy-agnostic
(`replica_safe_model_fn`) is in docs/distributed.md. See
docs/architecture.md.
"""

import collections
import contextlib
import json
import os

from absl import flags
import tensorflow.compat.v1 as tf

from input_pipeline import inputs
from runner import cli
from runner import devices

STRATEGIES = ('off', 'mirrored', 'multi_worker_mirrored', 'parameter_server')
TASK_TYPES = ('chief', 'worker', 'ps', 'evaluator')


def define_flags():
  flags.DEFINE_enum('distribution_strategy', 'off', STRATEGIES,
                    'tf.distribute strategy; the cluster comes from TF_CONFIG '
                    '(docs/distributed.md).')
  flags.DEFINE_integer('cpu_replicas', 1,
                       'mirrored on a machine without GPUs: replicas on this '
                       'many logical CPU devices.')


class Cluster(collections.namedtuple('Cluster', 'spec task_type task_id')):
  """A validated TF_CONFIG: spec {type: [host:port]}, this task's type, id."""

  @property
  def is_chief(self):
    return self.task_type == 'chief'

  @property
  def trains(self):
    """True for the tasks that run training steps (chief and workers)."""
    return self.task_type in ('chief', 'worker')

  @property
  def num_workers(self):
    """Training processes: the chief and the workers."""
    return len(self.spec.get('chief', [])) + len(self.spec.get('worker', []))

  @property
  def task(self):
    return '%s:%d' % (self.task_type, self.task_id)


def parse_tf_config(text):
  """The Cluster of a TF_CONFIG value; None when it is unset or empty.

  Raises:
    cli.UsageError: (one line) not JSON, no cluster or no task, a task type
      or index the cluster does not have, not exactly one chief, more than
      one evaluator, or an address that is not host:port.
  """
  if text is None or not text.strip():
    return None
  try:
    config = json.loads(text)
  except ValueError as e:
    raise cli.UsageError('TF_CONFIG is not valid JSON: %s' % e)
  if not isinstance(config, dict):
    raise cli.UsageError('TF_CONFIG must be a JSON object with "cluster" and '
                         '"task", got %s' % type(config).__name__)
  spec, task = config.get('cluster'), config.get('task')
  if not spec or not isinstance(spec, dict):
    raise cli.UsageError('TF_CONFIG has no "cluster" (e.g. {"chief": '
                         '["127.0.0.1:2222"], "worker": [...]})')
  for kind, addresses in sorted(spec.items()):
    if kind not in TASK_TYPES:
      raise cli.UsageError('TF_CONFIG cluster: unknown task type %r (known: '
                           '%s)' % (kind, ', '.join(TASK_TYPES)))
    if (not isinstance(addresses, list) or not addresses or
        not all(_is_address(a) for a in addresses)):
      raise cli.UsageError('TF_CONFIG cluster %r must be a non-empty list of '
                           '"host:port", got %r' % (kind, addresses))
  if len(spec.get('chief', [])) != 1:
    raise cli.UsageError('TF_CONFIG cluster needs exactly one "chief" task, '
                         'got %d' % len(spec.get('chief', [])))
  if len(spec.get('evaluator', [])) > 1:
    raise cli.UsageError('TF_CONFIG cluster has %d evaluators; at most one'
                         % len(spec['evaluator']))
  if not isinstance(task, dict) or 'type' not in task:
    raise cli.UsageError('TF_CONFIG has no "task" ({"type": "worker", '
                         '"index": 0}) saying which task this process is')
  kind, index = task['type'], task.get('index', 0)
  if kind not in spec:
    raise cli.UsageError('TF_CONFIG task type %r is not in the cluster (%s)'
                         % (kind, ', '.join(sorted(spec))))
  if not isinstance(index, int) or not 0 <= index < len(spec[kind]):
    raise cli.UsageError('TF_CONFIG task index %r out of range: the cluster '
                         'has %d %r task(s)' % (index, len(spec[kind]), kind))
  return Cluster({k: list(v) for k, v in spec.items()}, kind, index)


def _is_address(value):
  if not isinstance(value, str) or ':' not in value:
    return False
  port = value.rsplit(':', 1)[1]
  return port.isdigit() and 0 < int(port) < 65536


def resolve(strategy, cpu_replicas=1, environ=None):
  """Validates --distribution_strategy against TF_CONFIG; returns the Cluster.

  Returns None for `off` and `mirrored` (neither uses a cluster).

  Raises:
    cli.UsageError: a bad TF_CONFIG, or one the strategy cannot use.
  """
  environ = os.environ if environ is None else environ
  if strategy not in STRATEGIES:
    raise cli.UsageError('--distribution_strategy must be one of %s, got %r'
                         % (', '.join(STRATEGIES), strategy))
  if cpu_replicas < 1:
    raise cli.UsageError('--cpu_replicas must be positive, got %r'
                         % cpu_replicas)
  cluster = parse_tf_config(environ.get('TF_CONFIG'))
  if strategy == 'off':
    if cluster is not None:
      raise cli.UsageError('TF_CONFIG is set but --distribution_strategy=off; '
                           'choose a strategy or unset TF_CONFIG')
    return None
  if cpu_replicas > 1 and strategy != 'mirrored':
    raise cli.UsageError('--cpu_replicas applies to '
                         '--distribution_strategy=mirrored only')
  if strategy == 'mirrored':
    if cluster is not None:
      raise cli.UsageError('--distribution_strategy=mirrored runs on this '
                           'machine alone, but TF_CONFIG is set; unset it or '
                           'use multi_worker_mirrored')
    return None
  if cluster is None:
    raise cli.UsageError('--distribution_strategy=%s needs a cluster in '
                         'TF_CONFIG (launch/local_cluster.py starts one on '
                         'this machine)' % strategy)
  if strategy == 'parameter_server' and 'ps' not in cluster.spec:
    raise cli.UsageError('--distribution_strategy=parameter_server needs "ps" '
                         'tasks in the TF_CONFIG cluster')
  if strategy == 'multi_worker_mirrored' and 'ps' in cluster.spec:
    raise cli.UsageError('--distribution_strategy=multi_worker_mirrored takes '
                         'no "ps" tasks; use parameter_server')
  return cluster


def check_device(strategy, device):
  """UsageError for a strategy on the NPU (Ascend runs HCCL instead)."""
  if strategy != 'off' and device == 'npu':
    raise cli.UsageError('--distribution_strategy=%s is for CPU/GPU; on '
                         'Ascend use --device=npu with RANK_SIZE (HCCL)'
                         % strategy)


def make_strategy(strategy, cpu_replicas=1):
  """The tf.distribute strategy for a name `resolve` accepted, or None."""
  if strategy == 'off':
    return None
  if strategy == 'mirrored':
    if cpu_replicas > 1 or not tf.test.is_built_with_gpu_support():
      return tf.distribute.MirroredStrategy(
          ['/cpu:%d' % i for i in range(cpu_replicas)])
    return tf.distribute.MirroredStrategy()
  if strategy == 'multi_worker_mirrored':
    return tf.distribute.experimental.MultiWorkerMirroredStrategy()
  return tf.distribute.experimental.ParameterServerStrategy()


def replicas_per_step(strategy_name, strategy):
  """Replicas whose batches one global step consumes (1 without a strategy).

  parameter_server is asynchronous: every worker's step is a global step.
  """
  if strategy is None or strategy_name == 'parameter_server':
    return 1
  return strategy.num_replicas_in_sync


def _on_write(next_creator, **kwargs):
  """Variable creator: ON_READ becomes ON_WRITE; NONE aggregation MEAN."""
  if kwargs.get('synchronization') == tf.VariableSynchronization.ON_READ:
    kwargs['synchronization'] = tf.VariableSynchronization.ON_WRITE
  dtype = kwargs.get('dtype')
  if (kwargs.get('aggregation') in (None, tf.VariableAggregation.NONE) and
      (dtype is None or tf.as_dtype(dtype).is_floating)):
    kwargs['aggregation'] = tf.VariableAggregation.MEAN
  return next_creator(**kwargs)


def replica_safe_model_fn(model_fn):
  """`model_fn` whose variables can be updated from a replica.

  Replica-local (ON_READ) variables are created ON_WRITE (see the module
  docstring), and float variables without an aggregation get MEAN, so an
  assignment made in replica context (the spec builder's decoupled weight
  decay `kernel <- kernel * (1 - wd * lr)`) is accepted: every replica
  computes the same value and their mean is that value. Without a strategy
  these settings have no effect.
  """

  def wrapped(features, labels, mode, params):
    with tf.variable_creator_scope(_on_write):
      return model_fn(features, labels, mode, params)

  return wrapped


def train_input_fn(source, needs, params, seed, start_step=0):
  """An input_fn taking the strategy's InputContext: this worker's shard.

  Each input pipeline (one per worker) reads every
  `num_input_pipelines`-th record from offset `input_pipeline_id`, with
  batches of the per-replica `needs.batch_size`; the replicas of a worker
  take consecutive batches. The streams start where a run from step 0
  would be at `start_step` (a resume continues them).
  """

  def input_fn(input_context=None):
    shards, index, per_step = 1, 0, 1
    if input_context is not None:
      shards = input_context.num_input_pipelines
      index = input_context.input_pipeline_id
      per_step = max(1, input_context.num_replicas_in_sync // shards)
    return inputs.train_input_fn(source, needs, params, seed=seed,
                                 num_shards=shards, shard_index=index,
                                 start_step=start_step,
                                 batches_per_step=per_step)()

  return input_fn


@contextlib.contextmanager
def without_tf_config():
  """Hides TF_CONFIG from RunConfig (a process-local Estimator)."""
  saved = os.environ.pop('TF_CONFIG', None)
  try:
    yield
  finally:
    if saved is not None:
      os.environ['TF_CONFIG'] = saved


def make_estimator(model_fn, model_dir, params, opts, strategy,
                   cpu_replicas=1):
  """An Estimator training under `strategy` (RunConfig reads TF_CONFIG).

  Evaluation stays on one device (eval_distribute=None): it reads a
  checkpoint, and the padded last batch is exact only in one pass.
  """
  session = devices.session_config(opts)
  if cpu_replicas > 1:
    session.device_count['CPU'] = cpu_replicas
  config = tf.estimator.RunConfig(
      train_distribute=strategy,
      **devices.run_config_args(model_dir, params, opts, session))
  return tf.estimator.Estimator(model_fn=replica_safe_model_fn(model_fn),
                                config=config, params=params)


def release_server():
  """Drops the tf.train.Server train_and_evaluate started for this task.

  The distribute coordinator keeps it in a module-level thread-local; left
  to interpreter exit, its __del__ runs after TensorFlow's modules are torn
  down and prints a spurious AttributeError traceback into every task's log.
  Call after train_and_evaluate returns.
  """
  # pylint: disable=g-import-not-at-top,protected-access
  from tensorflow.python.distribute import distribute_coordinator
  local = distribute_coordinator._thread_local
  if getattr(local, 'server', None) is not None:
    del local.server


class MetricsPrinter(tf.estimator.Exporter):
  """An 'exporter' that prints each evaluation's line (exports nothing).

  train_and_evaluate calls exporters after every evaluation, on the process
  that evaluates (the chief with `mirrored`, the evaluator task otherwise).
  """

  def __init__(self, format_line, printer=print):
    self._format = format_line
    self._print = printer

  @property
  def name(self):
    return 'metrics_printer'

  def export(self, estimator, export_path, checkpoint_path, eval_result,
             is_the_final_export):
    del estimator, export_path, checkpoint_path, is_the_final_export
    self._print(self._format(eval_result))
    return None
