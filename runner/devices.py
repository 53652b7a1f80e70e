"""The Estimator factory, run and session configuration, and the device flags.

CPU/GPU get `tf.estimator.Estimator`; the NPU path is `npu.py`'s. The Ascend
flags and their NPURunConfig arguments: docs/ascend.md. See
docs/architecture.md.
"""

import os

from absl import flags
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from input_pipeline import runtime
from model_fns import core
from runner import ascend
from runner import cli
from runner import npu

# Devices with a backend module of their own (`available()`, `UNAVAILABLE`,
# `make_estimator(...)`, `input_shard()`); CPU and GPU are TensorFlow's.
BACKENDS = {'npu': npu}
DEVICES = ('auto', 'cpu', 'gpu') + tuple(BACKENDS)
PRECISION_MODES = ('allow_fp32_to_fp16', 'force_fp16', 'must_keep_origin_dtype',
                   'allow_mix_precision')


def define_flags():
  """Flags for the run configuration and the Ascend options."""
  flags.DEFINE_enum('device', 'auto', DEVICES,
                    'auto: NPU when npu_bridge imports, else CPU/GPU.')
  flags.DEFINE_integer('save_checkpoints_steps', 1000,
                       'Checkpoint (and evaluation) interval in steps.')
  flags.DEFINE_integer('keep_checkpoint_max', 5, 'Checkpoints to keep.')
  flags.DEFINE_integer('log_every_steps', 100, 'Progress line interval.')
  flags.DEFINE_integer('intra_op_threads', 0, '0 = TensorFlow chooses (the '
                       'number of CPUs on an MKL-DNN build).')
  flags.DEFINE_integer('inter_op_threads', 0, '0 = TensorFlow chooses (1 on '
                       'an MKL-DNN build).')
  flags.DEFINE_bool('xla', False, 'XLA JIT compilation (CPU/GPU).')
  flags.DEFINE_enum('precision_mode', None, PRECISION_MODES,
                    'Ascend precision mode (seed flag).')
  flags.DEFINE_bool('over_dump', False, 'Ascend overflow dump (seed flag).')
  flags.DEFINE_string('over_dump_path', None,
                      'Overflow dump directory (default MODEL_DIR/overflow).')
  flags.DEFINE_bool('data_dump_flag', False, 'Ascend data dump (seed flag).')
  flags.DEFINE_integer('data_dump_step', 10, 'Step to dump (seed flag).')
  flags.DEFINE_string('data_dump_path', None,
                      'Data dump directory (default MODEL_DIR/data_dump).')
  flags.DEFINE_bool('profiling', False, 'Ascend profiling (seed flag).')
  flags.DEFINE_string('profiling_options', None,
                      'Profiling options JSON (default: training trace into '
                      'MODEL_DIR/profiling).')
  flags.DEFINE_integer('iterations_per_loop', 1,
                       'NPU: steps run on device per session call.')
  flags.DEFINE_bool('mix_compile_mode', False, 'NPU mixed compile mode.')
  flags.DEFINE_string('loss_scale', 'auto',
                      'NPU loss scaling: auto (dynamic when --precision_mode '
                      'lets float16 in, which CANN\'s default does), dynamic '
                      '(ExponentialUpdateLossScaleManager), none, or a fixed '
                      'scale >= 1 (FixedLossScaleManager).')
  flags.register_validator('loss_scale', ascend.valid_loss_scale,
                           message='--loss_scale must be auto, dynamic, none '
                           'or a number >= 1')
  flags.DEFINE_float('init_loss_scale', 2.**32,
                     'Dynamic loss scaling: initial scale.', lower_bound=1.)
  flags.DEFINE_integer('incr_every_n_steps', 1000, 'Dynamic loss scaling: '
                       'multiply the scale by --incr_ratio after this many '
                       'finite steps.', lower_bound=1)
  flags.DEFINE_integer('decr_every_n_nan_or_inf', 2, 'Dynamic loss scaling: '
                       'multiply the scale by --decr_ratio after this many '
                       'overflowing steps.', lower_bound=1)
  flags.DEFINE_float('incr_ratio', 2., 'Dynamic loss scaling: growth factor.',
                     lower_bound=1.)
  flags.DEFINE_float('decr_ratio', 0.5, 'Dynamic loss scaling: shrink factor.',
                     lower_bound=0., upper_bound=1.)


def options_from_flags(flag_values):
  """The factory's options as a plain dict (flags are read only here)."""
  keys = ('device', 'save_checkpoints_steps', 'keep_checkpoint_max',
          'log_every_steps', 'intra_op_threads', 'inter_op_threads', 'xla',
          'precision_mode', 'over_dump', 'over_dump_path', 'data_dump_flag',
          'data_dump_step', 'data_dump_path', 'profiling', 'profiling_options',
          'iterations_per_loop', 'mix_compile_mode', 'loss_scale',
          'init_loss_scale', 'incr_every_n_steps', 'decr_every_n_nan_or_inf',
          'incr_ratio', 'decr_ratio')
  return {k: flag_values[k].value for k in keys}


def resolve_device(device):
  """`device`, or for 'auto' the first available backend, else 'cpu'."""
  if device == 'auto':
    return next((name for name, backend in BACKENDS.items()
                 if backend.available()), 'cpu')
  if device in BACKENDS and not BACKENDS[device].available():
    raise cli.UsageError('--device=%s but %s' % (device,
                                                  BACKENDS[device].UNAVAILABLE))
  return device


def mkl_enabled():
  """True for a build that runs oneDNN / MKL-DNN kernels (intel-tensorflow
  1.15, TF 2.x on x86)."""
  return runtime.onednn_enabled()


def session_config(opts):
  """The session's ConfigProto for the options of `options_from_flags`.

  Thread counts of 0 let TensorFlow choose (one thread per core for both
  pools), except on an MKL-DNN build, where they mean 1 inter-op thread and
  one intra-op thread per core: MKL-DNN runs each convolution on an OpenMP
  pool of all cores, so two at once oversubscribe them, and left to itself
  the build ran them on one core (RealMix on 2 cores, intel-tensorflow
  1.15.2: 8.9 s/step with TensorFlow's choice, 18 s/step with only the
  inter-op pool set to 1, 4.6 s/step with 1 and 2; docs/benchmarks.md).
  """
  config = tf.ConfigProto(allow_soft_placement=True)
  mkl = mkl_enabled()
  config.intra_op_parallelism_threads = (
      opts.get('intra_op_threads') or ((os.cpu_count() or 1) if mkl else 0))
  config.inter_op_parallelism_threads = (
      opts.get('inter_op_threads') or (1 if mkl else 0))
  if opts.get('xla'):
    config.graph_options.optimizer_options.global_jit_level = (
        tf.OptimizerOptions.ON_1)
  if gpu_mixed_precision(opts):
    config.graph_options.rewrite_options.auto_mixed_precision = (
        rewriter_config_pb2.RewriterConfig.ON)
  return config


def gpu_mixed_precision(opts):
  """True when --precision_mode=allow_mix_precision means Grappler's
  automatic mixed precision: off the NPU, with a GPU visible.

  On Ascend the flag is CANN's precision mode (NPURunConfig); on GPUs the
  same flag turns on the graph rewrite that runs matmuls and convolutions in
  float16 with float32 master weights (TF 2.15; TF 1.15 has the same
  rewriter). On CPU it does nothing (`precision_note`).
  """
  return (opts.get('precision_mode') == 'allow_mix_precision' and
          opts.get('device') != 'npu' and runtime.gpu_available())


def precision_note(opts, device):
  """One line for a --precision_mode that has no effect here, else None."""
  mode = opts.get('precision_mode')
  if not mode or device == 'npu':
    return None
  if mode == 'allow_mix_precision':
    if runtime.gpu_available():
      return None
    return ('note: --precision_mode=allow_mix_precision has no effect on CPU '
            '(it means CANN\'s mixed precision on Ascend and automatic mixed '
            'precision on GPUs)')
  return ('note: --precision_mode=%s is an Ascend setting and has no effect '
          'on %s' % (mode, 'GPU' if runtime.gpu_available() else 'CPU'))


def run_config_args(model_dir, params, opts, session=None):
  """RunConfig / NPURunConfig arguments every Estimator of a run shares.

  `session` defaults to `session_config(opts)`.
  """
  return dict(
      model_dir=model_dir,
      tf_random_seed=params.get('seed'),
      save_summary_steps=opts.get('log_every_steps') or 100,
      save_checkpoints_steps=opts.get('save_checkpoints_steps'),
      keep_checkpoint_max=opts.get('keep_checkpoint_max', 5),
      log_step_count_steps=None,
      session_config=session or session_config(opts),
  )


def make_estimator(model_dir, params, opts, network_fn=None,
                   warm_start_from=None):
  """Returns (estimator, device) for the options of `options_from_flags`.

  The model_fn is `core.make_model_fn(network_fn)`; a device of BACKENDS
  gets its backend's Estimator (`npu.make_estimator`: NPUEstimator with the
  Ascend optimizer wrapping and rank sums).
  """
  device = resolve_device(opts.get('device', 'auto'))
  common = run_config_args(model_dir, params, opts)
  if device in BACKENDS:
    return BACKENDS[device].make_estimator(model_dir, params, opts, common,
                                           network_fn), device
  config = tf.estimator.RunConfig(**common)
  return tf.estimator.Estimator(model_fn=core.make_model_fn(network_fn),
                                config=config, params=params,
                                warm_start_from=warm_start_from), device


def input_shard(opts):
  """(num_shards, shard_index) of this process's training input.

  Ascend with RANK_SIZE > 1: (RANK_SIZE, RANK_ID), each rank reading its own
  shard. Otherwise (1, 0); under a tf.distribute strategy the strategy's
  input context shards instead (launch/train.py).

  Raises:
    cli.UsageError: on the NPU path, a missing or inconsistent rank
      environment (ascend.read_rank_env); --device=npu without npu_bridge.
  """
  device = resolve_device(opts.get('device', 'auto'))
  if device not in BACKENDS:
    return 1, 0
  return BACKENDS[device].input_shard()
