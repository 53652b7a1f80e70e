"""Accuracy of a checkpoint's EMA model on valid images after each single RandAugment op / cutout."""
import os, sys, json
import numpy as np
sys.path.insert(0, '/work/bench')
import tensorflow.compat.v1 as tf
tf.disable_eager_execution()
from input_pipeline import inputs, sources, augment, preprocessing
from model_fns import base, spec as spec_lib
model_dir, ckpt = sys.argv[1], sys.argv[2]
params = json.load(open(os.path.join(model_dir, 'params.json')))
source = sources.resolve(params['data_dir'], params['dataset'])
N = 1024
ds = inputs.eval_input_fn(source, 'valid', N, params)()
feat, lab = tf.data.make_one_shot_iterator(ds).get_next()
img01 = (feat['image'] + 1.) / 2.   # minus_one_one -> [0, 1]
op = tf.placeholder(tf.int32, []); lev = tf.placeholder(tf.int32, []); mode = tf.placeholder(tf.int32, [])
seeds = tf.stack([tf.range(N, dtype=tf.int64), tf.fill([N], tf.constant(7, tf.int64))], 1)
def one(args):
  im, sd = args
  ss = augment.split_seed(sd, 2)
  sign = tf.where(augment._coin(ss[0]), 1., -1.)
  out = augment.apply_ra_op(im, op, lev, sign)
  out.set_shape(im.shape)
  return out
x = tf.map_fn(one, (img01, seeds), dtype=tf.float32)
xn = x * 2. - 1.
# optional cutout (14x14, fill 0 in normalised space = grey 0.5) or black-fill cutout
def cut(args):
  im, sd = args
  return augment.random_cutout(im, 14, sd)
xc = tf.map_fn(cut, (xn, seeds), dtype=tf.float32)
xcb = tf.map_fn(cut, (xn + 1., seeds), dtype=tf.float32) - 1.   # fill with black (-1)
xin = tf.case([(tf.equal(mode, 1), lambda: xc), (tf.equal(mode, 2), lambda: xcb)], default=lambda: xn)
model = base.Model(params)
model.logits(xin, training=False)
getter = spec_lib.ema_getter(spec_lib.training_ema(model))
with tf.variable_scope(tf.get_variable_scope(), custom_getter=getter, reuse=True):
  pred = tf.argmax(model.logits(xin, training=False), 1)
saver = tf.train.Saver()
with tf.Session(config=tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)) as sess:
  saver.restore(sess, ckpt)
  imgs, y = sess.run([img01, lab])
  fd0 = {img01: imgs, lab: y}
  def acc(o, l, m=0):
    p = sess.run(pred, {img01: imgs, op: o, lev: l, mode: m})
    return 100 * (p == y).mean()
  print('ckpt', ckpt, 'valid images', N)
  print('clean (Identity): %.1f   cutout14 grey: %.1f   cutout14 black: %.1f' % (acc(0, 5), acc(0, 5, 1), acc(0, 5, 2)))
  for i, name in enumerate(augment.RA_OPS):
    print('%-12s ' % name + ' '.join('L%d %.1f' % (l, acc(i, l)) for l in (1, 5, 9)))
