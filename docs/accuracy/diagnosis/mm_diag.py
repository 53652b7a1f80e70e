"""MixMatch label-guess diagnostics on checkpoints (read-only)."""
import os, sys, json
import numpy as np
sys.path.insert(0, '/work/bench')
import tensorflow.compat.v1 as tf
tf.disable_eager_execution()
from input_pipeline import inputs, sources
from model_fns import base, registry, spec as spec_lib, ssl_common

model_dir = sys.argv[1]; ckpts = sys.argv[3:]; nbatches = int(sys.argv[2])
params = json.load(open(os.path.join(model_dir, 'params.json')))
source = sources.resolve(params['data_dir'], params['dataset'])
alg = registry.get('mixmatch')
needs = alg.input_needs(params)
ds = inputs.train_input_fn(source, needs, params, seed=12345)()
features, labels = tf.data.make_one_shot_iterator(ds).get_next()
model = base.Model(params)
views = ssl_common.split_views(features['unlabeled_views'])
T = params['temperature']
# as training: raw weights, training mode, each view its own batch
guess_train = ssl_common.guess_labels(model, views, T)
mean_train = tf.add_n([tf.nn.softmax(model.logits(v, training=True)) for v in views]) / len(views)
mean_eval = tf.add_n([tf.nn.softmax(model.logits(v, training=False)) for v in views]) / len(views)
lab_train = tf.nn.softmax(model.logits(features['image'], training=True))
lab_eval = tf.nn.softmax(model.logits(features['image'], training=False))
getter = spec_lib.ema_getter(spec_lib.training_ema(model))
with tf.variable_scope(tf.get_variable_scope(), custom_getter=getter, reuse=True):
  mean_ema = tf.add_n([tf.nn.softmax(model.logits(v, training=False)) for v in views]) / len(views)
fetch = dict(guess=guess_train, mean_train=mean_train, mean_eval=mean_eval, mean_ema=mean_ema,
             lab_train=lab_train, lab_eval=lab_eval, y=features['label'], ul=features['unlabeled_label'])
saver = tf.train.Saver()
with tf.Session(config=tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)) as sess:
  for ckpt in ckpts:
    saver.restore(sess, ckpt)
    rs = [sess.run(fetch) for _ in range(nbatches)]
    r = {k: np.concatenate([x[k] for x in rs]) for k in fetch}
    ul = r['ul']; y = r['y']
    print('== %s (%d unlabeled, %d labeled)' % (ckpt, len(ul), len(y)))
    g = r['guess']
    ent = -(g * np.log(np.maximum(g, 1e-12))).sum(1)
    print('  sharpened guess (train-mode raw, as training): acc %.2f, mean max %.3f, mean entropy %.3f nats, frac max>0.95 %.2f'
          % (100*(g.argmax(1) == ul).mean(), g.max(1).mean(), ent.mean(), (g.max(1) > 0.95).mean()))
    print('  guess argmax histogram (%):', np.round(100*np.bincount(g.argmax(1), minlength=10)/len(g), 1))
    print('  mean guess mass per class (%):', np.round(100*g.mean(0), 1))
    for k in ('mean_train', 'mean_eval', 'mean_ema'):
      p = r[k]
      print('  %-10s unlabeled acc %.2f  histogram %s' % (k, 100*(p.argmax(1) == ul).mean(), np.round(100*np.bincount(p.argmax(1), minlength=10)/len(p), 1)))
    for k in ('lab_train', 'lab_eval'):
      p = r[k]
      print('  %-10s labeled(weak) acc %.2f  xe %.3f  per class %s' % (k, 100*(p.argmax(1) == y).mean(), -np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)).mean(), np.round([100*(p.argmax(1)[y==c]==c).mean() for c in range(10)],1)))
    # confusion of guesses
    cm = np.zeros((10, 10), int)
    np.add.at(cm, (ul, g.argmax(1)), 1)
    print('  per-true-class guess acc (%):', np.round(100*np.diag(cm)/cm.sum(1), 1))
