"""FixMatch pseudo-label diagnostics on a checkpoint (read-only)."""
import os, sys, json
import numpy as np
sys.path.insert(0, '/work/bench')
import tensorflow.compat.v1 as tf
tf.disable_eager_execution()
from input_pipeline import inputs, sources
from model_fns import base, registry, spec as spec_lib

model_dir = sys.argv[1]; ckpt = sys.argv[2]; nbatches = int(sys.argv[3])
params = json.load(open(os.path.join(model_dir, 'params.json')))
params = dict(params, algorithm='fixmatch', uratio=params.get('uratio', 3),
              confidence=0.95, wu=1.0, unlabeled_keeps_labeled=True,
              randaugment_ops=params.get('randaugment_ops', 2), cutout_frac=params.get('cutout_frac', 0.5))
source = sources.resolve(params['data_dir'], params['dataset'])
alg = registry.get('fixmatch')
needs = alg.input_needs(params)
ds = inputs.train_input_fn(source, needs, params, seed=12345)()
features, labels = tf.data.make_one_shot_iterator(ds).get_next()
model = base.Model(params)
images = features['image']
views = tf.unstack(features['unlabeled_views'], axis=1)
weak, strong = views
B = images.shape.as_list()[0]
out = {}
# training-mode concat pass (as training does), raw weights
lt = model.logits(tf.concat([images, weak, strong], 0), training=True)
out['raw_train'] = tf.split(lt[B:], 2)
out['raw_eval'] = [model.logits(weak, training=False), model.logits(strong, training=False)]
getter = spec_lib.ema_getter(spec_lib.training_ema(model))
with tf.variable_scope(tf.get_variable_scope(), custom_getter=getter, reuse=True):
  lte = model.logits(tf.concat([images, weak, strong], 0), training=True)
  out['ema_train'] = tf.split(lte[B:], 2)
  out['ema_eval'] = [model.logits(weak, training=False), model.logits(strong, training=False)]
fetch = {k: [tf.nn.softmax(v[0]), tf.nn.softmax(v[1])] for k, v in out.items()}
fetch['ul'] = features['unlabeled_label']
saver = tf.train.Saver([v for v in tf.global_variables() if 'global_step' not in v.name or True])
acc = {k: [[], []] for k in out}; uls = []
with tf.Session(config=tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)) as sess:
  saver.restore(sess, ckpt)
  for _ in range(nbatches):
    r = sess.run(fetch)
    uls.append(r['ul'])
    for k in out:
      acc[k][0].append(r[k][0]); acc[k][1].append(r[k][1])
KEYS = os.environ.get('KEYS', 'raw_train,raw_eval,ema_train,ema_eval').split(',')
y = np.concatenate(uls); keep = y >= 0
print('checkpoint', ckpt, 'unlabeled images', len(y), 'with true label', keep.sum())
for k in [k for k in out if k in KEYS]:
  pw = np.concatenate(acc[k][0])[keep]; ps = np.concatenate(acc[k][1])[keep]; yy = y[keep]
  pl = pw.argmax(1); conf = pw.max(1); mask = conf >= 0.95
  xeu = -np.log(np.maximum(ps[np.arange(len(pl)), pl], 1e-12))
  print('%-9s weak acc %.2f | mask %.2f%% | pseudo acc masked %.2f | unmasked %.2f | strong acc %.2f | strong==pseudo (masked) %.2f | xeu(mean mask*CE) %.4f | mean CE masked %.3f | strong maxp mean %.3f'
        % (k, 100*(pl == yy).mean(), 100*mask.mean(), 100*(pl[mask] == yy[mask]).mean() if mask.any() else float('nan'),
           100*(pl[~mask] == yy[~mask]).mean() if (~mask).any() else float('nan'),
           100*(ps.argmax(1) == yy).mean(), 100*(ps.argmax(1)[mask] == pl[mask]).mean() if mask.any() else float('nan'),
           (mask*xeu).mean(), xeu[mask].mean() if mask.any() else float('nan'), ps.max(1).mean()))
  print('          weak acc per true class', np.round([100*(pl[yy == c] == c).mean() for c in range(10)], 1), 'pred hist %', np.round(100*np.bincount(pl, minlength=10)/len(pl), 1))
  print('          mask rate per true class', np.round([100*mask[yy == c].mean() for c in range(10)], 1))
  print('          masked pseudo acc per true class', np.round([100*(pl[mask & (yy == c)] == c).mean() if (mask & (yy==c)).any() else -1 for c in range(10)], 1))
  print('          pseudo-label histogram (masked)', np.bincount(pl[mask], minlength=10))
  for th in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99):
    m = conf >= th
    print('          thr %.2f: mask %.1f%% acc %.2f' % (th, 100*m.mean(), 100*(pl[m] == yy[m]).mean() if m.any() else float('nan')))
