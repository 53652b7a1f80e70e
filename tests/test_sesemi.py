"""Tests of SESEMI (model_fns/sesemi.py)."""

import numpy as np
import tensorflow.compat.v1 as tf

from model_fns import base
from model_fns import sesemi
from tests import model_test_util as mtu

VARIANTS = ('ssl', 'supervised')


class SesemiTest(tf.test.TestCase):

  def test_defaults_follow_the_reference(self):
    params = mtu.make_params(sesemi)
    expected = {'network': 'convnet', 'batch_size': 16, 'epochs': 50,
                'optimizer': 'sgd', 'momentum': 0.9, 'nesterov': True,
                'lr': 0.05, 'lr_schedule': 'poly', 'lr_decay_power': 0.5,
                'weight_decay_l2': 5e-4, 'weight_decay': 0.,
                'ema_decay': 0., 'head_dropout': 0.2, 'bn_momentum': 0.99,
                'aug_shift': 2, 'aug_noise_std': 0.15,
                'sesemi_variant': 'ssl', 'unlabeled_keeps_labeled': True}
    self.assertDictContainsSubset(expected, params)

  def test_input_needs(self):
    ssl = sesemi.input_needs(mtu.make_params(sesemi))
    self.assertEqual(ssl.batch_size, 96)
    self.assertEqual(ssl.labeled_view, 'sesemi')
    self.assertEqual(ssl.num_unlabeled, 16)
    self.assertEqual((ssl.proxy, ssl.proxy_batch), ('unlabeled', 16))
    self.assertTrue(ssl.unlabeled_keeps_labeled)
    sup = sesemi.input_needs(
        mtu.make_params(sesemi, sesemi_variant='supervised'))
    self.assertEqual(sup.batch_size, 96)
    self.assertEqual(sup.num_unlabeled, 0)
    self.assertEqual((sup.proxy, sup.proxy_batch), ('labeled', 16))
    with self.assertRaisesRegex(ValueError, 'sesemi_variant'):
      sesemi.input_needs(mtu.make_params(sesemi, sesemi_variant='x'))

  def test_train_steps(self):
    counts = {'labeled': 1000, 'unlabeled': 44000, 'valid': 5000,
              'train': 50000}
    self.assertEqual(sesemi.train_steps(mtu.make_params(sesemi), counts),
                     (45000 // 16) * 50)
    self.assertEqual(sesemi.train_steps(
        mtu.make_params(sesemi, unlabeled_keeps_labeled=False), counts),
                     (44000 // 16) * 50)
    self.assertEqual(sesemi.train_steps(
        mtu.make_params(sesemi, sesemi_variant='supervised', epochs=300),
        counts), (1000 // 16) * 300)
    whole = {'labeled': 50000, 'unlabeled': 50000, 'valid': 0,
             'train': 50000}   # a plain dataset name: one pool
    self.assertEqual(sesemi.train_steps(mtu.make_params(sesemi), whole),
                     (50000 // 16) * 50)

  def test_loss_matches_numpy(self):
    for variant in VARIANTS:
      params = mtu.make_params(sesemi, batch_size=2, sesemi_variant=variant)
      features = mtu.synthetic_features(sesemi.input_needs(params), params)
      self.assertEqual(features['image'].shape, (12, 8, 8, 3))
      self.assertEqual(features['proxy_image'].shape, (12, 8, 8, 3))
      logged, outputs, kernels = mtu.evaluate_losses(sesemi, features, params)
      self.assertEqual([name for name, _ in outputs], ['classifier', 'proxy'])
      logits, proxy_logits = outputs[0][1], outputs[1][1]
      self.assertEqual(proxy_logits.shape, (12, 6))
      xe = np.mean(mtu.sparse_xe(logits, features['label']))
      xe_proxy = np.mean(mtu.sparse_xe(proxy_logits, features['proxy_label']))
      self.assertLen(kernels, 3)   # tiny conv, classifier and proxy heads
      l2 = 5e-4 * sum(np.sum(k.astype(np.float64) ** 2) for k in kernels)
      self.assertAllClose(logged['xe'], xe, rtol=1e-5)
      self.assertAllClose(logged['xe_proxy'], xe_proxy, rtol=1e-5)
      self.assertAllClose(logged['l2'], l2, rtol=1e-5)
      self.assertAllClose(logged['loss'], xe + xe_proxy + l2, rtol=1e-5)

  def test_branches_are_separate_calls(self):
    """Supervised logits (training mode) do not see the proxy batch."""
    params = mtu.make_params(sesemi, batch_size=1, head_dropout=0.)
    features = mtu.synthetic_features(sesemi.input_needs(params), params)
    with tf.Graph().as_default():
      proxy = tf.placeholder(tf.float32, features['proxy_image'].shape)
      model = mtu.RecordingModel(params)
      losses = sesemi.train_losses(
          dict(features, proxy_image=proxy), features['label'], params, model)
      # One set of batch-norm updates per branch.
      self.assertLen(tf.get_collection(tf.GraphKeys.UPDATE_OPS), 4)
      logits = model.outputs[0][1]
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        first = sess.run([logits, losses.terms['xe_proxy']],
                         {proxy: features['proxy_image']})
        second = sess.run([logits, losses.terms['xe_proxy']],
                          {proxy: 3. * features['proxy_image'] + 1.})
    self.assertAllClose(first[0], second[0])
    self.assertNotAllClose(first[1], second[1])

  def test_moving_statistics_come_from_the_supervised_branch(self):
    """The proxy batch does not move the batch-norm moving statistics."""
    params = mtu.make_params(sesemi, batch_size=1, head_dropout=0.)
    features = mtu.synthetic_features(sesemi.input_needs(params), params)
    with tf.Graph().as_default():
      proxy = tf.placeholder(tf.float32, features['proxy_image'].shape)
      model = mtu.RecordingModel(params)
      losses = sesemi.train_losses(
          dict(features, proxy_image=proxy), features['label'], params, model)
      all_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
      self.assertLen(all_ops, 4)
      # The supervised call's ops (created first), not the proxy call's.
      self.assertCountEqual(losses.update_ops, all_ops[:2])
      moving = [v for v in tf.global_variables() if 'moving_' in v.op.name]
      self.assertNotEmpty(moving)
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        initial = sess.run(moving)
        results = []
        for scale in (1., 5.):
          for var, value in zip(moving, initial):
            var.load(value, sess)
          sess.run(losses.update_ops,
                   {proxy: scale * features['proxy_image'] + scale})
          results.append(sess.run(moving))
    for first, second, start in zip(results[0], results[1], initial):
      self.assertNotAllClose(first, start)   # the supervised branch moved it
      self.assertAllClose(first, second)     # the proxy batch did not

  def test_train_eval_predict(self):
    for variant in VARIANTS:
      params = mtu.make_params(sesemi, batch_size=1, sesemi_variant=variant)
      features = mtu.synthetic_features(sesemi.input_needs(params), params)
      history = mtu.run_train_steps(features, params, steps=3)
      self.assertCountEqual(history[0],
                            ['xe', 'xe_proxy', 'l2', 'loss', 'lr'])
      self.assertTrue(np.all(np.isfinite([h['loss'] for h in history])))
      self.assertAllClose([h['lr'] for h in history],
                          [0.05 * (1 - s / 100.) ** 0.5 for s in range(3)])

      metrics = mtu.run_eval(
          mtu.synthetic_features(None, params, mode=mtu.EVAL), params)
      self.assertCountEqual(metrics, ['accuracy', 'loss'])   # no EMA
      predictions, _ = mtu.run_predict(
          mtu.synthetic_features(None, params, mode=mtu.PREDICT), params)
      self.assertEqual(predictions['logits'].shape, (4, 10))
      # Inference has no proxy head.
      self.assertAllClose(predictions['probabilities'].sum(1), np.ones(4),
                          rtol=1e-5)

  def test_proxy_head_variables(self):
    params = mtu.make_params(sesemi, batch_size=1)
    features = mtu.synthetic_features(sesemi.input_needs(params), params)
    with tf.Graph().as_default():
      mtu.build_spec(features, mtu.TRAIN, params)
      shapes = {v.op.name: v.shape.as_list()
                for v in tf.trainable_variables(base.MODEL_SCOPE)}
    self.assertEqual(shapes['model/proxy/kernel'], [4, 6])
    self.assertEqual(shapes['model/classifier/kernel'], [4, 10])

  def test_real_convnet(self):
    params = mtu.make_params(sesemi, batch_size=1, image_shape=(16, 16, 3))
    features = mtu.synthetic_features(sesemi.input_needs(params), params)
    history = mtu.run_train_steps(features, params, steps=2, network_fn=None)
    self.assertTrue(np.all(np.isfinite([h['loss'] for h in history])))
    metrics = mtu.run_eval(
        mtu.synthetic_features(None, params, mode=mtu.EVAL), params,
        network_fn=None)
    self.assertTrue(np.isfinite(metrics['loss']))
    predictions, _ = mtu.run_predict(
        mtu.synthetic_features(None, params, mode=mtu.PREDICT), params,
        network_fn=None)
    self.assertEqual(predictions['logits'].shape, (4, 10))


if __name__ == '__main__':
  tf.test.main()
