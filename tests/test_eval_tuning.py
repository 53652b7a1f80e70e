"""eval.py's stream tuning: each tuned row re-estimates batch norm with its
own weights' training forward pass, over the same replayed stream."""

from absl import flags
from absl.testing import absltest
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import sources
from launch import eval as eval_lib
from launch import train as train_lib
from model_fns import registry
from runner import params as params_lib
from tests import data_fixtures

if 'model_dir' not in flags.FLAGS:
  train_lib.define_flags()


class StreamTuningTest(data_fixtures.TinyDataTestCase):

  def params(self, algorithm, *extra):
    argv = ['train', '--data_dir=' + self.data_dir, '--dataset=' + self.split,
            '--model_dir=' + self.get_temp_dir(), '--algorithm=' + algorithm,
            '--batch_size=2', '--ema_decay=0.9', '--bn_momentum=0.5']
    flags.FLAGS(params_lib.reorder_flagfiles(
        argv + data_fixtures.TINY_NET + list(extra)))
    try:
      source = sources.resolve(self.data_dir, self.split)
      params = params_lib.resolve(flags.FLAGS, params_lib.data_facts(
          source, self.data_dir, self.split))
    finally:
      flags.FLAGS.unparse_flags()
    params['train_steps'] = registry.default_train_steps(params, source.counts)
    params_lib.add_data_params(
        params, registry.get(algorithm).input_needs(params), source)
    return source, params

  def build(self, algorithm, *extra):
    source, params = self.params(algorithm, *extra)
    graph = eval_lib._Graph(params)  # pylint: disable=protected-access
    graph.add_stream_tuning(params, source)
    return graph

  def test_algorithms_tune_both_rows(self):
    """One of each kind: MixMatch keeps one interleaved batch's updates,
    FlexMatch carries per-example state in its loss, Mean Teacher reads the
    EMA inside its loss, SESEMI has a proxy branch. (ReMixMatch, the case
    that needs the EMA row's own pass, builds the same way but takes 35 s.)"""
    for algorithm in ('mixmatch', 'flexmatch', 'mean_teacher', 'sesemi'):
      with self.subTest(algorithm=algorithm), tf.Graph().as_default():
        graph = self.build(algorithm)
        self.assertCountEqual(graph.tune_ops, ['raw', 'ema'])
        with self.session() as sess:
          sess.run(tf.global_variables_initializer())
          start = sess.run(graph.stat_vars)
          for row in ('raw', 'ema'):
            graph.stream_tune(sess, row, 1, start)
            tuned = sess.run(graph.stat_vars)
            # The moving statistics moved (momentum 0.5, one update).
            self.assertTrue(any(not np.allclose(a, b)
                                for a, b in zip(start, tuned)))

  def test_ema_row_measures_with_ema_weights(self):
    """The first batch norm follows the stem convolution. With the EMA's
    stem 10x the raw stem, the EMA row's variance estimate is 100x the raw
    row's; sharing the raw estimate (libml) would make them equal."""
    with tf.Graph().as_default():
      graph = self.build('supervised')
      stem = [v for v in tf.trainable_variables() if v.shape.ndims == 4][0]
      shadow = graph.model.ema.average(stem)
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(shadow.assign(10. * stem))
        zeros = [np.zeros(v.shape, np.float32) for v in graph.stat_vars]
        variance = {}
        for row in ('raw', 'ema', 'raw'):
          graph.stream_tune(sess, row, 3, zeros)
          got = sess.run(graph.stat_vars[1])  # First layer's moving variance.
          if row in variance:  # The stream replays from its start.
            self.assertAllClose(got, variance[row], rtol=1e-4)
          variance[row] = got
        ratio = variance['ema'] / np.maximum(variance['raw'], 1e-12)
        self.assertAllClose(ratio, np.full_like(ratio, 100.), rtol=1e-3)


if __name__ == '__main__':
  absltest.main()
