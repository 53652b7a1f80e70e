"""The Ascend backend: the one module that imports npu_bridge (lazily).

`devices.make_estimator` and `devices.input_shard` call it on the NPU path;
the rank environment and tables it reads are `ascend.py`'s (pure Python, also
used by launch/npu_launch.py). Flags and NPURunConfig: docs/ascend.md; the
layout: docs/architecture.md.
"""

import importlib
import json
import os

from model_fns import core
from runner import ascend
from runner import cli

UNAVAILABLE = ('npu_bridge cannot be imported: install the Ascend CANN '
               'toolkit and source its set_env.sh')


def available():
  """True when npu_bridge can be imported (without importing it)."""
  try:
    return importlib.util.find_spec('npu_bridge') is not None
  except (ImportError, ValueError):
    return False


def make_estimator(model_dir, params, opts, run_config_args, network_fn=None):
  """NPUEstimator with NPURunConfig for the options of `options_from_flags`.

  Args:
    run_config_args: `devices.run_config_args(...)`, shared with the
      CPU/GPU Estimator.
  """
  env = ascend.read_rank_env()
  loss_scale = ascend.loss_scale_settings(opts)
  npu_config = importlib.import_module('npu_bridge.estimator.npu.npu_config')
  npu_estimator = importlib.import_module(
      'npu_bridge.estimator.npu.npu_estimator')
  config = npu_config.NPURunConfig(
      iterations_per_loop=opts.get('iterations_per_loop') or 1,
      enable_data_pre_proc=True,
      precision_mode=opts.get('precision_mode'),
      mix_compile_mode=bool(opts.get('mix_compile_mode')),
      hcom_parallel=env.rank_size > 1,
      dump_config=_dump_config(npu_config, model_dir, opts),
      profiling_config=_profiling_config(npu_config, model_dir, opts),
      **run_config_args)
  return npu_estimator.NPUEstimator(
      model_fn=model_fn(env, loss_scale, network_fn), config=config,
      params=params)


def model_fn(env, loss_scale, network_fn=None):
  """`core.make_model_fn` with the NPU optimizer wrapping and metric sums.

  The optimizer becomes `NPUDistributedOptimizer(optimizer)` when RANK_SIZE
  > 1, then `NPULossScaleOptimizer(optimizer, manager, is_distributed)` when
  `loss_scale` asks for scaling; with RANK_SIZE > 1 the eval accuracies and
  the algorithms' statistics are summed across ranks by
  `hccl_ops.allreduce`.

  Args:
    env: the `ascend.RankEnv` of this process.
    loss_scale: `ascend.loss_scale_settings(...)`: None or
      (manager class name, kwargs).
    network_fn: as in `core.make_model_fn`.
  """
  distributed = env.rank_size > 1
  if not distributed and loss_scale is None:
    return core.make_model_fn(network_fn)

  def wrap_optimizer(optimizer):
    if distributed:
      npu_optimizer = importlib.import_module(
          'npu_bridge.estimator.npu.npu_optimizer')
      optimizer = npu_optimizer.NPUDistributedOptimizer(optimizer)
    if loss_scale is not None:
      managers = importlib.import_module(
          'npu_bridge.estimator.npu.npu_loss_scale_manager')
      scaling = importlib.import_module(
          'npu_bridge.estimator.npu.npu_loss_scale_optimizer')
      name, kwargs = loss_scale
      manager = getattr(managers, name)(**kwargs)
      optimizer = scaling.NPULossScaleOptimizer(optimizer, manager,
                                                is_distributed=distributed)
    return optimizer

  def process_sum(tensor):
    hccl_ops = importlib.import_module('npu_bridge.hccl.hccl_ops')
    return hccl_ops.allreduce(tensor, 'sum')

  return core.make_model_fn(network_fn, wrap_optimizer,
                            process_sum if distributed else None)


def input_shard():
  """(RANK_SIZE, RANK_ID): each rank reads its own shard of the input."""
  env = ascend.read_rank_env()
  return env.rank_size, env.rank_id


def _dump_config(npu_config, model_dir, opts):
  if opts.get('over_dump') and opts.get('data_dump_flag'):
    raise cli.UsageError('--over_dump and --data_dump_flag cannot be combined')
  if opts.get('over_dump'):
    return npu_config.DumpConfig(
        enable_dump_debug=True,
        dump_path=opts.get('over_dump_path') or os.path.join(model_dir,
                                                             'overflow'),
        dump_debug_mode='all')
  if opts.get('data_dump_flag'):
    return npu_config.DumpConfig(
        enable_dump=True,
        dump_path=opts.get('data_dump_path') or os.path.join(model_dir,
                                                             'data_dump'),
        dump_step=str(opts.get('data_dump_step')),
        dump_mode='all')
  return None


def _profiling_config(npu_config, model_dir, opts):
  if not opts.get('profiling'):
    return None
  options = opts.get('profiling_options') or json.dumps({
      'output': os.path.join(model_dir, 'profiling'),
      'training_trace': 'on', 'task_trace': 'on',
      'fp_point': '', 'bp_point': ''})
  try:
    json.loads(options)
  except ValueError as e:
    raise cli.UsageError('--profiling_options is not valid JSON: %s' % e)
  return npu_config.ProfilingConfig(enable_profiling=True,
                                    profiling_options=options)
