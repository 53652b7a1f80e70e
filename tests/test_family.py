"""Tests of the MixMatch-family algorithms (model_fns/<name>.py): losses
against numpy on a linear model, input needs, defaults and errors, and
core.model_fn in every mode.
"""

import collections
import glob
import os

from absl.testing import parameterized
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import needs
from model_fns import base
from model_fns import fixmatch
from model_fns import hparams
from model_fns import ict
from model_fns import mean_teacher
from model_fns import mixmatch
from model_fns import mixup
from model_fns import pi_model
from model_fns import pseudo_label
from model_fns import realmix
from model_fns import registry
from model_fns import spec
from model_fns import ssl_common
from model_fns import vat
from tests import model_test_util as mtu

FAMILY = (mixmatch, realmix, fixmatch, ict, mean_teacher, pi_model,
          pseudo_label, vat, mixup)
NAMED = [(m.NAME, m) for m in FAMILY]
NO_MIX = 1e-6  # Beta(1e-6, 1e-6) draws 0 or 1: lambda = max(l, 1 - l) = 1.
CLASSES = 5


flat_network = mtu.flat_network
np_softmax = mtu.softmax


def np_xe(targets, logits):
  return -(targets * np.log(np_softmax(logits))).sum(-1)


class LinearCase(tf.test.TestCase):
  """Runs an algorithm's train_losses with logits = flatten(x) @ k + b."""

  def losses(self, module, step=0, batch=4, **overrides):
    """Returns (numpy features, params, {name: value}, (kernel, bias))."""
    params = mtu.make_params(module, num_classes=CLASSES,
                             image_shape=(2, 2, 1), batch_size=batch,
                             **overrides)
    features = mtu.synthetic_features(module.input_needs(params), params,
                                      seed=step + 1)
    with tf.Graph().as_default():
      tf.set_random_seed(1)
      tensors = {k: tf.constant(v) for k, v in features.items()}
      model = base.Model(params, network_fn=flat_network)
      result = module.train_losses(tensors, tensors['label'], params, model)
      fetch = dict(result.terms)
      fetch['total'] = result.total
      for name, value in (result.summaries or {}).items():
        fetch[name] = value
      kernel, bias = tf.trainable_variables('model/')
      global_step = tf.train.get_or_create_global_step()
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        # Fixed numpy weights, so the checks do not depend on the
        # runtime's random draws (TF 1.15 and TF 2 derive op seeds apart).
        # Teachers' averages (model/classifier/kernel/...) start equal.
        rng = np.random.RandomState(step + 7)
        limit = np.sqrt(6. / sum(kernel.shape.as_list()))
        for weight, value in (
            (kernel, rng.uniform(-limit, limit, kernel.shape.as_list())),
            (bias, rng.uniform(-.1, .1, bias.shape.as_list()))):
          for variable in tf.global_variables():
            if variable.op.name.startswith(weight.op.name):
              variable.load(value, sess)
        sess.run(global_step.assign(step))
        values, weights = sess.run([fetch, (kernel, bias)])
    return features, params, values, weights

  def logits(self, images, weights):
    kernel, bias = weights
    return images.reshape(len(images), -1) @ kernel + bias


class MixMatchLossTest(LinearCase):

  def test_losses_without_mixing(self):
    features, params, got, w = self.losses(mixmatch, step=2048, beta=NO_MIX)
    u = features['unlabeled_views']
    probs = [np_softmax(self.logits(u[:, k], w)) for k in range(2)]
    guess = np.mean(probs, axis=0) ** 2
    guess /= guess.sum(1, keepdims=True)
    xe = np_xe(np.eye(CLASSES)[features['label']],
               self.logits(features['image'], w)).mean()
    l2u = np.mean([(guess - p) ** 2 for p in probs])
    weight = 75. * 2048 * 4 / (1024. * 1024.)
    self.assertAllClose(got['xe'], xe, rtol=1e-5)
    self.assertAllClose(got['l2u'], l2u, rtol=1e-4)
    self.assertAllClose(got['monitors/w_match'], weight, rtol=1e-6)
    self.assertAllClose(got['total'], xe + weight * l2u, rtol=1e-5)

  def test_mixed_targets_are_distributions(self):
    features, _, got, _ = self.losses(mixmatch, step=0)
    self.assertTrue(np.isfinite(got['xe']) and got['l2u'] >= 0)
    self.assertEqual(0., got['monitors/w_match'])
    self.assertAllClose(got['total'], got['xe'])
    self.assertEqual((4, 2, 2, 2, 1), features['unlabeled_views'].shape)

  def test_unequal_batches_are_refused(self):
    params = mtu.make_params(mixmatch, image_shape=(2, 2, 1), batch_size=4)
    features = mtu.synthetic_features(
        needs.InputNeeds(4, unlabeled_ratio=2,
                         unlabeled_views=('weak', 'weak')), params)
    with tf.Graph().as_default():
      tensors = {k: tf.constant(v) for k, v in features.items()}
      with self.assertRaisesRegex(ValueError, 'unlabeled'):
        mixmatch.train_losses(tensors, tensors['label'], params,
                              base.Model(params, network_fn=flat_network))


class RealMixLossTest(LinearCase):

  def test_tsa_and_ood_masks(self):
    features, params, got, w = self.losses(
        realmix, step=30, batch=8, beta=NO_MIX, tsa='linear',
        percent_mask=0.25, train_steps=100)
    u = features['unlabeled_views']
    probs = [np_softmax(self.logits(u[:, k], w)) for k in range(2)]
    guess = np.mean(probs, axis=0) ** 2
    guess /= guess.sum(1, keepdims=True)
    # TSA at 30% of training: threshold 0.3 * (1 - 1/5) + 1/5.
    threshold = 0.3 * 0.8 + 0.2
    targets = np.eye(CLASSES)[features['label']]
    p_x = np_softmax(self.logits(features['image'], w))
    tsa_kept = ((targets * p_x).sum(1) < threshold).astype(float)
    self.assertTrue(0 < tsa_kept.sum() < 8, tsa_kept)
    xe = (np_xe(targets, self.logits(features['image'], w)) *
          tsa_kept).sum() / tsa_kept.sum()
    # OOD mask over the 16 unlabeled rows: drop the 4 least confident.
    p_u = np.concatenate(probs)
    sq = ((np.concatenate([guess, guess]) - p_u) ** 2).sum(1)
    kept = np.ones(16)
    kept[np.argsort(p_u.max(1), kind='stable')[:4]] = 0
    l2u = (sq * kept).sum() / (kept.sum() * CLASSES)
    weight = 75. * 30 * 8 / (1024. * 1024.)
    self.assertAllClose(got['xe'], xe, rtol=1e-5)
    self.assertAllClose(got['l2u'], l2u, rtol=1e-4)
    self.assertAllClose(got['monitors/tsa_kept'], tsa_kept.mean())
    self.assertAllClose(got['monitors/ood_kept'], 0.75)
    self.assertAllClose(got['total'], xe + weight * l2u, rtol=1e-5)

  def test_without_masks_it_is_mixmatch(self):
    _, _, got_r, _ = self.losses(realmix, step=500, beta=NO_MIX)
    _, _, got_m, _ = self.losses(mixmatch, step=500, beta=NO_MIX)
    for key in ('xe', 'l2u', 'total'):
      self.assertAllClose(got_r[key], got_m[key], rtol=1e-5)
    self.assertEqual(1., got_r['monitors/tsa_kept'])
    self.assertEqual(1., got_r['monitors/ood_kept'])


class FixMatchLossTest(LinearCase):

  def test_pseudo_labels_from_weak_train_strong(self):
    features, _, got, w = self.losses(fixmatch, batch=4, uratio=3,
                                      confidence=0.35, wu=2.)
    u = features['unlabeled_views']
    self.assertEqual((12, 2, 2, 2, 1), u.shape)
    p_weak = np_softmax(self.logits(u[:, 0], w))
    mask = (p_weak.max(1) >= 0.35).astype(float)
    self.assertTrue(0 < mask.sum() < 12, mask)
    pseudo = np.eye(CLASSES)[p_weak.argmax(1)]
    xeu = (mask * np_xe(pseudo, self.logits(u[:, 1], w))).mean()
    xe = np_xe(np.eye(CLASSES)[features['label']],
               self.logits(features['image'], w)).mean()
    self.assertAllClose(got['xe'], xe, rtol=1e-5)
    self.assertAllClose(got['xeu'], xeu, rtol=1e-5)
    self.assertAllClose(got['monitors/mask'], mask.mean())
    self.assertAllClose(got['total'], xe + 2. * xeu, rtol=1e-5)


class BaselineLossTest(LinearCase):

  def xe(self, features, w):
    return np_xe(np.eye(CLASSES)[features['label']],
                 self.logits(features['image'], w)).mean()

  def test_pi_model(self):
    features, _, got, w = self.losses(pi_model, step=20, train_steps=100)
    u = features['unlabeled_views']
    pm = np.mean((np_softmax(self.logits(u[:, 0], w)) -
                  np_softmax(self.logits(u[:, 1], w))) ** 2)
    ramp = 20 / 40.
    self.assertAllClose(got['pm'], pm, rtol=1e-4)
    self.assertAllClose(got['monitors/ramp'], ramp)
    self.assertAllClose(got['total'], self.xe(features, w) + 10. * ramp * pm,
                        rtol=1e-5)

  def test_mean_teacher_starts_from_the_student(self):
    # At initialisation the teacher's averages equal the weights.
    features, _, got, w = self.losses(mean_teacher, step=60, train_steps=100)
    u = features['unlabeled_views']
    mt = np.mean((np_softmax(self.logits(u[:, 0], w)) -
                  np_softmax(self.logits(u[:, 1], w))) ** 2)
    self.assertAllClose(got['mt'], mt, rtol=1e-4)
    self.assertAllClose(got['total'], self.xe(features, w) + 50. * mt,
                        rtol=1e-5)

  def test_ict_without_mixing_matches_teacher(self):
    _, _, got, _ = self.losses(ict, step=10, beta=NO_MIX)
    self.assertAllClose(got['mt'], 0., atol=1e-9)
    _, _, mixed, _ = self.losses(ict, step=10)
    self.assertGreater(mixed['mt'], 0.)

  def test_pseudo_label(self):
    features, _, got, w = self.losses(pseudo_label, step=100, confidence=0.3)
    logits_u = self.logits(features['unlabeled_views'][:, 0], w)
    p = np_softmax(logits_u)
    mask = (p.max(1) >= 0.3).astype(float)
    self.assertTrue(0 < mask.sum() < 4, mask)
    pl = (mask * np_xe(np.eye(CLASSES)[p.argmax(1)], logits_u)).mean()
    self.assertAllClose(got['pl'], pl, rtol=1e-5)
    self.assertAllClose(got['total'], self.xe(features, w) + pl, rtol=1e-5)

  def test_vat(self):
    features, _, got, w = self.losses(vat, step=10, train_steps=100,
                                      vat_eps=1.)
    p = np_softmax(self.logits(features['unlabeled_views'][:, 0], w))
    entmin = -(p * np.log(p)).sum(1).mean()
    ramp = 10 / 40.
    self.assertAllClose(got['entmin'], entmin, rtol=1e-5)
    self.assertGreater(got['vat'], 0.)
    self.assertAllClose(
        got['total'],
        self.xe(features, w) + 0.3 * ramp * got['vat'] + 0.06 * entmin,
        rtol=1e-5)

  def test_mixup_without_mixing(self):
    features, _, got, w = self.losses(mixup, beta=NO_MIX)
    p = np_softmax(self.logits(features['unlabeled_views'][:, 0], w))
    self.assertAllClose(got['xe'], self.xe(features, w), rtol=1e-5)
    self.assertAllClose(got['xeu'], -(p * np.log(p)).sum(1).mean(),
                        rtol=1e-5)


class NeedsAndDefaultsTest(tf.test.TestCase, parameterized.TestCase):

  def test_input_needs(self):
    views = {'mixmatch': ('weak', 'weak'), 'realmix': ('realmix', 'realmix'),
             'fixmatch': ('weak', 'strong'), 'ict': ('weak',),
             'mean_teacher': ('weak', 'weak'), 'pi_model': ('weak', 'weak'),
             'pseudo_label': ('weak',), 'vat': ('weak',), 'mixup': ('weak',)}
    for module in FAMILY:
      params = mtu.make_params(module)
      got = module.input_needs(params)
      self.assertEqual(views[module.NAME], got.unlabeled_views, module.NAME)
      self.assertEqual(64, got.batch_size)
      self.assertEqual('weak', got.labeled_view)
      self.assertEqual(7 if module is fixmatch else 1, got.unlabeled_ratio)
      self.assertEqual(module is fixmatch, got.unlabeled_keeps_labeled)
    self.assertEqual(('weak',) * 3, mixmatch.input_needs(
        mtu.make_params(mixmatch, num_augment=3)).unlabeled_views)
    self.assertEqual(('weak', 'weak'), realmix.input_needs(
        mtu.make_params(realmix, unlabeled_view='weak')).unlabeled_views)

  def test_reference_defaults(self):
    for module in FAMILY:
      d = module.DEFAULTS
      self.assertEqual(0.999, d['ema_decay'])
      self.assertEqual(('resnet', 32, 4, 0, 64),
                       (d['network'], d['filters'], d['repeat'], d['scales'],
                        d['batch_size']))
      if module is not fixmatch:
        self.assertEqual(('adam', 0.002, 'constant', 0.02, 0.0),
                         (d['optimizer'], d['lr'], d['lr_schedule'],
                          d['weight_decay'], d['weight_decay_l2']))
    f = fixmatch.DEFAULTS
    self.assertEqual(('sgd', 0.03, True, 0.9, 'cosine', 7. / 16., 0.0),
                     (f['optimizer'], f['lr'], f['nesterov'], f['momentum'],
                      f['lr_schedule'], f['cosine_factor'],
                      f['weight_decay']))
    # libml's wd * sum(l2_loss(w)) = wd / 2 * sum(w^2).
    self.assertEqual(5e-4 / 2, f['weight_decay_l2'])
    self.assertEqual((7, 0.95, 1.0), (f['uratio'], f['confidence'], f['wu']))
    m = mixmatch.DEFAULTS
    self.assertEqual((0.75, 75.0, 1024, 0.5, 2, 1024),
                     (m['beta'], m['w_match'], m['warmup_kimg'],
                      m['temperature'], m['num_augment'], m['epochs']))
    r = realmix.DEFAULTS
    self.assertEqual((700, -1.0, 'none'),
                     (r['epochs'], r['percent_mask'], r['tsa']))
    self.assertEqual((10.0, 50.0, 50.0, 1.0),
                     (pi_model.DEFAULTS['consistency_weight'],
                      mean_teacher.DEFAULTS['consistency_weight'],
                      ict.DEFAULTS['consistency_weight'],
                      pseudo_label.DEFAULTS['consistency_weight']))
    self.assertEqual((0.3, 6.0, 1e-6, 0.06),
                     (vat.DEFAULTS['vat_weight'], vat.DEFAULTS['vat_eps'],
                      vat.DEFAULTS['vat_xi'], vat.DEFAULTS['entmin_weight']))
    self.assertEqual((0.5, 0.5), (ict.DEFAULTS['beta'],
                                  mixup.DEFAULTS['beta']))

  def test_shared_keys_have_one_type(self):
    # runner/params.py defines one flag per key over all algorithms.
    mine = set().union(*[m.DEFAULTS for m in FAMILY])
    kinds = collections.defaultdict(set)
    for name in registry.NAMES:
      for key, value in registry.get(name).DEFAULTS.items():
        kinds[key].add(type(value))
    for key, value in hparams.COMMON_DEFAULTS.items():
      kinds[key].add(type(value))
    for key in mine:
      types = kinds[key]
      self.assertLen(types, 1, '%s has types %s' % (key, types))

  @parameterized.named_parameters(
      ('percent', realmix, {'percent_mask': 1.0}, '--percent_mask'),
      ('tsa', realmix, {'tsa': 'linear_schedule'}, '--tsa'),
      ('tsa_length', realmix, {'tsa': 'exp', 'train_steps': 0},
       'train_steps'),
      ('beta', mixmatch, {'beta': 0.}, '--beta'),
      ('augment', mixmatch, {'num_augment': 0}, '--num_augment'),
      ('uratio', fixmatch, {'uratio': 0}, '--uratio'),
      ('confidence', fixmatch, {'confidence': 2.}, '--confidence'),
      ('teacher', mean_teacher, {'ema_decay': 0.}, '--ema_decay'),
      ('ict_teacher', ict, {'ema_decay': 0.}, '--ema_decay'),
      ('vat_eps', vat, {'vat_eps': -1.}, '--vat_eps'),
      ('mixup_beta', mixup, {'beta': -1.}, '--beta'))
  def test_bad_params_raise(self, module, overrides, flag):
    with self.assertRaisesRegex(ValueError, flag):
      module.input_needs(mtu.make_params(module, **overrides))

  def test_ramps_need_a_training_length(self):
    params = mtu.make_params(pi_model, image_shape=(2, 2, 1), batch_size=4,
                             train_steps=0)
    features = mtu.synthetic_features(pi_model.input_needs(params), params)
    with tf.Graph().as_default():
      tensors = {k: tf.constant(v) for k, v in features.items()}
      with self.assertRaisesRegex(ValueError, 'train_steps'):
        pi_model.train_losses(tensors, tensors['label'], params,
                              base.Model(params, network_fn=flat_network))


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'launch', 'configs')
MISMATCH_CLASSES = {0: '4,5,6,7', 25: '0,5,6,7', 50: '0,1,6,7',
                    75: '0,1,8,7', 100: '0,1,8,9'}


def _read_flagfile(path):
  """(comment text, {flag: value string}) of an absl flagfile."""
  comments, flags = [], collections.OrderedDict()
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line.startswith('#'):
        comments.append(line)
      elif line:
        key, value = line[2:].split('=', 1)
        flags[key] = value
  return '\n'.join(comments), flags


def _parse(value, default):
  if isinstance(default, bool):
    return {'true': True, 'false': False}[value]
  return type(default)(value)


class FlagfileTest(tf.test.TestCase):

  def resolve(self, name):
    """The params a flagfile gives (every flag must be a params key)."""
    comments, flags = _read_flagfile(os.path.join(CONFIG_DIR, name))
    module = registry.get(flags['algorithm'])
    params = mtu.make_params(module, train_steps=0)
    for key, value in flags.items():
      if key == 'dataset':
        params[key] = value
        continue
      self.assertIn(key, params, '%s: unknown flag --%s' % (name, key))
      params[key] = _parse(value, params[key])
    params['train_steps'] = registry.default_train_steps(params, {})
    module.input_needs(params)
    return comments, params

  def test_every_family_flagfile_resolves(self):
    names = [os.path.basename(p) for p in glob.glob(CONFIG_DIR + '/*.cfg')]
    # The family's flagfiles; tests/test_launch.py resolves every flagfile
    # through the real flags.
    # (test_adaptive_ssl.py resolves the newer algorithms' flagfiles.)
    newer = ('uda', 'flexmatch', 'freematch', 'softmatch', 'remixmatch')
    mine = [n for n in names if not n.startswith(
        ('sesemi', 'supervised', 'fmnist_sesemi', 'fmnist_supervised') +
        newer + tuple('fmnist_' + a for a in newer))]
    self.assertLen(mine, 19)
    for name in mine:
      comments, params = self.resolve(name)
      self.assertIn('--flagfile=launch/configs/' + name, comments)
      self.assertIn(params['dataset'], comments)

  def test_realmix_seed(self):
    _, params = self.resolve('realmix_cifar10_250.cfg')
    self.assertEqual(
        ('realmix', 'cifar10.1@250-500', 0.02, 0.999, 0.75, 75., 32, 4, 0,
         'adam', 0.002, 64, 700, 0.5, 2),
        tuple(params[k] for k in (
            'algorithm', 'dataset', 'weight_decay', 'ema_decay', 'beta',
            'w_match', 'filters', 'repeat', 'scales', 'optimizer', 'lr',
            'batch_size', 'epochs', 'temperature', 'num_augment')))
    self.assertEqual(700 * 65536 // 64, params['train_steps'])

  def test_mismatch_splits(self):
    for percent, classes in MISMATCH_CLASSES.items():
      comments, params = self.resolve('realmix_mismatch_%d.cfg' % percent)
      split = 'cifar10.1@2400-500.mm%d' % percent
      self.assertEqual(split, params['dataset'])
      self.assertIn('--split=%s --labeled_classes=2,3,4,5,6,7 '
                    '--unlabeled_classes=%s' % (split, classes), comments)
      self.assertGreater(params['percent_mask'], 0)

  def test_fashion_mnist_presets_cover_the_family(self):
    for module in FAMILY:
      _, params = self.resolve('fmnist_%s.cfg' % module.NAME)
      self.assertEqual(module.NAME, params['algorithm'])
      self.assertEqual('fashion_mnist.1@1000-5000', params['dataset'])
      self.assertEqual((16, 2, 2), (params['filters'], params['repeat'],
                                    params['scales']))


def _train_params(module):
  return mtu.make_params(module, batch_size=4, uratio=2, train_steps=20,
                         tsa='linear', percent_mask=0.25)


class BatchNormPolicyTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(*NAMED)
  def test_only_one_forward_pass_updates_batch_norm(self, module):
    params = _train_params(module)
    features = mtu.synthetic_features(module.input_needs(params), params)
    with tf.Graph().as_default():
      tensors = {k: tf.constant(v) for k, v in features.items()}
      result = module.train_losses(
          tensors, tensors['label'], params,
          base.Model(params, network_fn=mtu.tiny_network))
      all_updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
    # tiny_network has one batch norm: moving mean and variance.
    self.assertLen(result.update_ops, 2)
    self.assertTrue(all(op in all_updates for op in result.update_ops))
    if module is not fixmatch:
      self.assertGreater(len(all_updates), 2)


class ModelFnTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(*NAMED)
  def test_train_steps_move_weights_and_ema(self, module):
    params = _train_params(module)
    features = mtu.synthetic_features(module.input_needs(params), params)
    with tf.Graph().as_default():
      tf.set_random_seed(0)
      estimator_spec, _ = mtu.build_spec(features, mtu.TRAIN, params)
      self.assertEqual([], [v.op.name for v in tf.global_variables()
                            if 'ExponentialMovingAverage_' in v.op.name])
      kernels = [v for v in tf.trainable_variables()
                 if v.op.name.endswith('kernel')]
      shadows = [v for v in tf.global_variables()
                 if v.op.name.endswith('kernel/ExponentialMovingAverage')]
      self.assertLen(shadows, len(kernels))
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        before = sess.run(kernels + shadows)
        losses = [sess.run([estimator_spec.loss, estimator_spec.train_op])[0]
                  for _ in range(3)]
        after = sess.run(kernels + shadows)
        step = sess.run(tf.train.get_global_step())
    self.assertEqual(3, step)
    self.assertTrue(np.all(np.isfinite(losses)), losses)
    for b, a, v in zip(before, after, kernels + shadows):
      self.assertTrue(np.all(np.isfinite(a)), v.op.name)
      self.assertGreater(np.abs(a - b).max(), 0, v.op.name)

  @parameterized.named_parameters(*NAMED)
  def test_eval_and_predict(self, module):
    params = _train_params(module)
    metrics = mtu.run_eval(
        mtu.synthetic_features(None, params, mode=mtu.EVAL), params)
    self.assertCountEqual(['accuracy', 'ema/accuracy', 'loss'], metrics)
    self.assertTrue(0 <= metrics['accuracy'] <= 1)
    self.assertTrue(np.isfinite(metrics['loss']))
    predictions, exports = mtu.run_predict(
        mtu.synthetic_features(None, params, mode=mtu.PREDICT), params)
    self.assertEqual((4, 10), predictions['probabilities'].shape)
    self.assertAllClose(predictions['probabilities'].sum(1), np.ones(4),
                        rtol=1e-5)
    self.assertAllEqual(predictions['classes'],
                        predictions['logits'].argmax(1))
    self.assertLen(exports, 1)

  def test_mixmatch_with_libml_resnet(self):
    params = mtu.make_params(mixmatch, batch_size=4, filters=8, repeat=1,
                             scales=2)
    features = mtu.synthetic_features(mixmatch.input_needs(params), params)
    with tf.Graph().as_default():
      tensors = {k: tf.constant(v) for k, v in features.items()}
      result = mixmatch.train_losses(tensors, tensors['label'], params,
                                     base.Model(params))
      all_updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
    # 2 guess passes + 3 interleaved passes; the first interleaved one kept.
    self.assertNotEmpty(result.update_ops)
    self.assertLen(all_updates, 5 * len(result.update_ops))
    history = mtu.run_train_steps(features, params, steps=3, network_fn=None)
    self.assertTrue(np.all(np.isfinite([h['loss'] for h in history])))
    self.assertNotEqual(history[0]['xe'], history[-1]['xe'])


class TeacherTest(tf.test.TestCase, parameterized.TestCase):
  """Mean Teacher's and ICT's teacher is the spec builder's EMA model."""

  @parameterized.named_parameters(('mean_teacher', mean_teacher),
                                  ('ict', ict))
  def test_teacher_reads_the_shadows_before_the_step(self, module):
    params = dict(_train_params(module), ema_decay=0.5)
    features = mtu.synthetic_features(module.input_needs(params), params)
    with tf.Graph().as_default():
      tf.set_random_seed(0)
      tensors = {k: tf.constant(v) for k, v in features.items()}
      model = mtu.RecordingModel(params)
      losses = module.train_losses(tensors, tensors['label'], params, model)
      train_op = spec.build_train_spec(losses, model, tensors).train_op
      # Calls: labeled batch, teacher, student.
      self.assertLen(model.outputs, 3)
      teacher = model.outputs[1][1]
      weights = tf.trainable_variables()
      ema = spec.training_ema(model)
      shadows = [ema.average(v) for v in weights]
      self.assertEqual([v.op.name + '/ExponentialMovingAverage'
                        for v in weights], [v.op.name for v in shadows])
      self.assertCountEqual(shadows, [
          v for v in tf.global_variables()
          if 'ExponentialMovingAverage' in v.op.name])
      self.assertEqual([], [v.op.name for v in tf.global_variables()
                            if 'teacher' in v.op.name])
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        for _ in range(2):
          sess.run(train_op)
        raw_before, shadow_before = sess.run([weights, shadows])
        got = sess.run([teacher, train_op])[0]
        raw_after, shadow_after = sess.run([weights, shadows])
    # The EMA is then updated from the post-step weights (libml's order),
    # with TF's num_updates warm-up after 2 steps: min(0.5, 3 / 12).
    decay = min(0.5, 3. / 12.)
    for w, s_0, s_1, v in zip(raw_after, shadow_before, shadow_after,
                              weights):
      self.assertAllClose(s_1, decay * s_0 + (1 - decay) * w, rtol=1e-5,
                          atol=1e-6, msg=v.op.name)
    # The model's own logits with the pre-step shadows as its weights.
    teacher_input = features['unlabeled_views'][:, 0]
    with tf.Graph().as_default():
      logits = base.Model(params, network_fn=mtu.tiny_network).logits(
          tf.constant(teacher_input), training=True)
      fresh = {v.op.name: v for v in tf.trainable_variables()}
      self.assertCountEqual([v.op.name for v in weights], fresh)
      with self.session() as sess:
        for var, value in zip(weights, shadow_before):
          fresh[var.op.name].load(value, sess)
        want = sess.run(logits)
        for var, value in zip(weights, raw_before):
          fresh[var.op.name].load(value, sess)
        student = sess.run(logits)
    self.assertAllClose(got, want, rtol=1e-5, atol=1e-6)
    self.assertNotAllClose(got, student)

  def test_mean_teacher_checkpoint_restores_into_eval(self):
    # The real model_fn and network, as the Estimator builds them.
    params = dict(_train_params(mean_teacher), ema_decay=0.5, filters=8,
                  repeat=1, scales=2)
    features = mtu.synthetic_features(mean_teacher.input_needs(params),
                                      params)
    path = os.path.join(self.get_temp_dir(), 'mt.ckpt')
    with tf.Graph().as_default():
      estimator_spec, _ = mtu.build_spec(features, mtu.TRAIN, params,
                                         network_fn=None)
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        for _ in range(3):
          sess.run(estimator_spec.train_op)
        saved = {v.op.name: sess.run(v) for v in tf.global_variables()}
        tf.train.Saver().save(sess, path)
    stored = [name for name, _ in tf.train.list_variables(path)]
    self.assertEqual([], [n for n in stored if 'teacher' in n])

    eval_features = mtu.synthetic_features(None, params, mode=mtu.EVAL)
    with tf.Graph().as_default():
      eval_spec, _ = mtu.build_spec(eval_features, mtu.EVAL, params,
                                    network_fn=None)
      graph = tf.get_default_graph()
      raw = graph.get_tensor_by_name('inference/logits:0')
      ema = graph.get_tensor_by_name('inference/ema_logits:0')
      weights = tf.trainable_variables()
      shadows = [v for v in tf.global_variables()
                 if v.op.name.endswith('/ExponentialMovingAverage')]
      self.assertCountEqual(
          [v.op.name + '/ExponentialMovingAverage' for v in weights],
          [v.op.name for v in shadows])
      with self.session() as sess:
        # Fails if any eval variable is missing from the checkpoint.
        tf.train.Saver().restore(sess, path)
        for var in weights + shadows:
          self.assertAllEqual(saved[var.op.name], sess.run(var),
                              msg=var.op.name)
        sess.run(tf.local_variables_initializer())
        raw_logits, ema_logits, loss = sess.run([raw, ema, eval_spec.loss])
        # The raw model with the shadow values loaded gives the EMA logits.
        for var in weights:
          var.load(saved[var.op.name + '/ExponentialMovingAverage'], sess)
        explicit = sess.run(raw)
    self.assertNotAllClose(raw_logits, ema_logits)
    self.assertAllClose(ema_logits, explicit, rtol=1e-5, atol=1e-6)
    self.assertTrue(np.isfinite(loss))


if __name__ == '__main__':
  tf.test.main()
