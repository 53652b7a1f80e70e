"""Stand-in for npu_bridge.estimator.npu.npu_config (CANN's signatures)."""

import tensorflow.compat.v1 as tf

import npu_bridge


class DumpConfig(object):

  def __init__(self, enable_dump=False, dump_path=None, dump_step=None,
               dump_mode='output', enable_dump_debug=False,
               dump_debug_mode='all'):
    npu_bridge.record('DumpConfig', locals_without_self(locals()))
    self.enable_dump = enable_dump
    self.dump_path = dump_path
    self.dump_step = dump_step
    self.dump_mode = dump_mode
    self.enable_dump_debug = enable_dump_debug
    self.dump_debug_mode = dump_debug_mode


class ProfilingConfig(object):

  def __init__(self, enable_profiling=False, profiling_options=None):
    npu_bridge.record('ProfilingConfig', locals_without_self(locals()))
    self.enable_profiling = enable_profiling
    self.profiling_options = profiling_options


_NPU_ONLY = dict(iterations_per_loop=1, profiling_config=None,
                 enable_data_pre_proc=True, precision_mode=None,
                 enable_reduce_precision=False, variable_format_optimize=True,
                 mix_compile_mode=False, hcom_parallel=False,
                 graph_memory_max_size=None, variable_memory_max_size=None,
                 auto_tune_mode=None, dump_config=None)


PRECISION_MODES = (None, 'force_fp32', 'force_fp16', 'allow_fp32_to_fp16',
                   'must_keep_origin_dtype', 'allow_mix_precision')
_BOOLS = ('enable_data_pre_proc', 'enable_reduce_precision',
          'variable_format_optimize', 'mix_compile_mode', 'hcom_parallel')


class NPURunConfig(tf.estimator.RunConfig):
  """Takes RunConfig's arguments plus the NPU ones; records them all."""

  def __init__(self, **kwargs):
    npu_bridge.record('NPURunConfig', kwargs)
    npu = {}
    for key, default in _NPU_ONLY.items():
      npu[key] = kwargs.pop(key, default)
    loop = npu['iterations_per_loop']
    if isinstance(loop, bool) or not isinstance(loop, int) or loop < 1:
      raise ValueError('iterations_per_loop must be a positive int, got %r'
                       % (loop,))
    if npu['precision_mode'] not in PRECISION_MODES:
      raise ValueError('precision_mode %r is not one of %s'
                       % (npu['precision_mode'], PRECISION_MODES))
    for key in _BOOLS:
      if not isinstance(npu[key], bool):
        raise TypeError('%s must be a bool, got %r' % (key, npu[key]))
    super(NPURunConfig, self).__init__(**kwargs)  # Unknown keys: TypeError.
    for key, value in npu.items():
      setattr(self, '_' + key, value)


def locals_without_self(values):
  return {k: v for k, v in values.items() if k != 'self'}
