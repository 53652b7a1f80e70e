"""Tests of the supervised baseline (model_fns/supervised.py)."""

import numpy as np
import tensorflow.compat.v1 as tf

from model_fns import supervised
from tests import model_test_util as mtu


class SupervisedTest(tf.test.TestCase):

  def test_defaults_are_libml_fully_supervised(self):
    params = mtu.make_params(supervised)
    expected = {'network': 'resnet', 'batch_size': 64, 'optimizer': 'adam',
                'lr': 0.002, 'lr_schedule': 'constant', 'weight_decay': 0.02,
                'weight_decay_l2': 0., 'ema_decay': 0.999,
                'label_smoothing': 0.001, 'bn_momentum': 0.999}
    self.assertDictContainsSubset(expected, params)

  def test_input_needs(self):
    needs = supervised.input_needs(mtu.make_params(supervised))
    self.assertEqual(needs.batch_size, 64)
    self.assertEqual(needs.labeled_view, 'weak')
    self.assertEqual(needs.num_unlabeled, 0)
    self.assertIsNone(needs.proxy)
    sesemi_view = supervised.input_needs(
        mtu.make_params(supervised, labeled_view='sesemi', batch_size=96))
    self.assertEqual((sesemi_view.batch_size, sesemi_view.labeled_view),
                     (96, 'sesemi'))

  def test_loss_matches_numpy(self):
    params = mtu.make_params(supervised, batch_size=4, label_smoothing=0.1,
                             weight_decay_l2=0.01, head_dropout=0.3)
    features = mtu.synthetic_features(supervised.input_needs(params), params)
    logged, outputs, kernels = mtu.evaluate_losses(supervised, features,
                                                   params)
    self.assertEqual([name for name, _ in outputs], ['classifier'])
    logits = outputs[0][1].astype(np.float64)
    targets = np.eye(10)[features['label']]
    targets = targets - 0.1 * (targets - 0.1)
    log_p = np.log(mtu.softmax(logits))
    xe = np.mean(-np.sum(targets * log_p, axis=1))
    l2 = 0.01 * sum(np.sum(k.astype(np.float64) ** 2) for k in kernels)
    self.assertLen(kernels, 2)   # tiny conv and classifier
    self.assertAllClose(logged['xe'], xe, rtol=1e-5)
    self.assertAllClose(logged['l2'], l2, rtol=1e-5)
    self.assertAllClose(logged['loss'], xe + l2, rtol=1e-5)

  def test_train_eval_predict(self):
    params = mtu.make_params(supervised, batch_size=4, lr=0.05)
    features = mtu.synthetic_features(supervised.input_needs(params), params)
    history = mtu.run_train_steps(features, params, steps=8)
    self.assertCountEqual(history[0], ['xe', 'loss', 'lr'])
    losses = [h['loss'] for h in history]
    self.assertTrue(np.all(np.isfinite(losses)))
    self.assertLess(losses[-1], losses[0])   # fits a fixed batch

    metrics = mtu.run_eval(
        mtu.synthetic_features(None, params, mode=mtu.EVAL), params)
    self.assertCountEqual(metrics, ['accuracy', 'ema/accuracy', 'loss'])
    # Fresh weights: raw and EMA are the same model.
    self.assertEqual(metrics['accuracy'], metrics['ema/accuracy'])
    self.assertTrue(np.isfinite(metrics['loss']))

    predictions, _ = mtu.run_predict(
        mtu.synthetic_features(None, params, mode=mtu.PREDICT), params)
    self.assertEqual(predictions['logits'].shape, (4, 10))
    self.assertAllEqual(predictions['classes'],
                        predictions['logits'].argmax(1))

  def test_real_resnet(self):
    params = mtu.make_params(supervised, batch_size=2, filters=4, repeat=1,
                             image_shape=(8, 8, 3))
    features = mtu.synthetic_features(supervised.input_needs(params), params)
    history = mtu.run_train_steps(features, params, steps=2, network_fn=None)
    self.assertTrue(np.all(np.isfinite([h['loss'] for h in history])))
    metrics = mtu.run_eval(
        mtu.synthetic_features(None, params, mode=mtu.EVAL), params,
        network_fn=None)
    self.assertTrue(np.isfinite(metrics['loss']))
    predictions, _ = mtu.run_predict(
        mtu.synthetic_features(None, params, mode=mtu.PREDICT), params,
        network_fn=None)
    self.assertEqual(predictions['probabilities'].shape, (4, 10))


if __name__ == '__main__':
  tf.test.main()
