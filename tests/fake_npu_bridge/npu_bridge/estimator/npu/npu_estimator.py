"""Stand-in for npu_bridge.estimator.npu.npu_estimator (runs on the CPU)."""

import tensorflow.compat.v1 as tf

import npu_bridge
from npu_bridge.estimator.npu import npu_config


class NPUEstimator(tf.estimator.Estimator):

  def __init__(self, model_fn=None, model_dir=None, config=None, params=None,
               job_start_file='', warm_start_from=None):
    npu_bridge.record('NPUEstimator', dict(
        model_fn=model_fn, model_dir=model_dir, config=config, params=params,
        job_start_file=job_start_file, warm_start_from=warm_start_from))
    if not isinstance(config, npu_config.NPURunConfig):
      raise TypeError('NPUEstimator needs an NPURunConfig, got %r' % (config,))
    super(NPUEstimator, self).__init__(model_fn=model_fn, model_dir=model_dir,
                                       config=config, params=params,
                                       warm_start_from=warm_start_from)
