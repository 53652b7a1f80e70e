r"""Exports a trained model as a SavedModel that takes images, not tensors.

  python launch/export.py --model_dir=runs/sesemi --export_dir=exported/sesemi

Signatures (tag 'serve'):
  serving_default  pixels:      uint8 [N, H, W, C]
  predict_bytes    image_bytes: string [N], encoded PNG or JPEG
Both return `probabilities` [N, K], `classes` [N] and `logits` [N, K].
All preprocessing (scaling, standardisation, GCN, ZCA) runs inside the
graph, and the weights are the EMA weights when the run kept an EMA: what
launch/eval.py reports as 'ema' is what the SavedModel serves.

The SavedModel is written under EXPORT_DIR.tmp-PID, loaded back and checked
against the Estimator's predictions on a few test images, and only then
renamed to EXPORT_DIR. With --overwrite the previous export is first moved
to EXPORT_DIR.old-PID; a run killed between the two renames leaves it there,
and the next export puts it back before doing anything else. A write the
file system refuses (full disk, file-size limit) ends with one line naming
the file (exit 1) and leaves EXPORT_DIR as it was.
"""

import errno
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import inputs
from input_pipeline import preprocessing
from input_pipeline import records
from input_pipeline import sources
from input_pipeline import writer
from launch import cli
from launch import devices
from launch import model_dir as model_dir_lib
from launch import params as params_lib
from model_fns import core

FLAGS = flags.FLAGS
SIGNATURE_PIXELS = 'serving_default'
SIGNATURE_BYTES = 'predict_bytes'


def define_flags():
  flags.DEFINE_string('model_dir', None, 'Model directory made by train.py.')
  flags.DEFINE_string('export_dir', None, 'Where the SavedModel goes.')
  flags.DEFINE_string('checkpoint', None, 'Checkpoint (default: the newest).')
  flags.DEFINE_string('data_dir', None, 'Overrides params.json\'s data_dir.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing EXPORT_DIR.')
  flags.DEFINE_integer('verify_images', 16,
                       'Test images the export is checked on (0: skip).')


def build_serving_graph(params, norm):
  """Builds the serving graph in the default graph.

  Returns (inputs, outputs): the two input placeholders by name and the
  model's predictions dict.
  """
  height, width, channels = params['image_shape']
  image_bytes = tf.placeholder(tf.string, [None], name='image_bytes')

  def decode(data):
    image = tf.image.decode_image(data, channels=channels,
                                  expand_animations=False)
    return tf.ensure_shape(image, [height, width, channels])

  decoded = tf.map_fn(decode, image_bytes, dtype=tf.uint8,
                      back_prop=False)
  # Feeding `pixels` bypasses the decoder; feeding `image_bytes` uses it.
  pixels = tf.placeholder_with_default(decoded, [None, height, width, channels],
                                       name='pixels')
  images = preprocessing.normalize(pixels, norm)
  spec = core.model_fn({'image': images}, None, tf.estimator.ModeKeys.PREDICT,
                       params)
  return {'pixels': pixels, 'image_bytes': image_bytes}, spec.predictions


def write_saved_model(params, norm, checkpoint, path):
  """Writes the SavedModel with both signatures to `path`."""
  with tf.Graph().as_default():
    tensors, outputs = build_serving_graph(params, norm)
    saver = tf.train.Saver()
    with tf.Session() as sess:
      saver.restore(sess, checkpoint)
      signature = tf.saved_model.signature_def_utils.predict_signature_def
      builder = tf.saved_model.Builder(path)
      builder.add_meta_graph_and_variables(
          sess, [tf.saved_model.tag_constants.SERVING],
          signature_def_map={
              SIGNATURE_PIXELS: signature({'pixels': tensors['pixels']},
                                          outputs),
              SIGNATURE_BYTES: signature(
                  {'image_bytes': tensors['image_bytes']}, outputs),
          },
          strip_default_attrs=True)
      builder.save()


def load_saved_model(path):
  """Returns predict(signature, array) for a SavedModel directory."""
  graph = tf.Graph()
  sess = tf.Session(graph=graph)
  with graph.as_default():
    meta = tf.saved_model.loader.load(
        sess, [tf.saved_model.tag_constants.SERVING], path)

  def predict(signature_name, values):
    signature = meta.signature_def[signature_name]
    (input_info,) = signature.inputs.values()
    fetches = {k: v.name for k, v in signature.outputs.items()}
    return sess.run(fetches, {input_info.name: values})

  return predict


def test_images(source, count):
  """Up to `count` (uint8 images, PNG bytes) from the test split, in order."""
  images, encoded = [], []
  for path in source.files['test']:
    for image, _, _ in records.read_examples(path):
      images.append(image)
      encoded.append(records.encode_png(image))
      if len(images) == count:
        return np.stack(images), encoded
  return np.stack(images), encoded


def verify(path, params, source, checkpoint, count):
  """Checks the SavedModel against the Estimator on `count` test images."""
  images, encoded = test_images(source, count)
  estimator, _ = devices.make_estimator(core.model_fn,
                                        os.path.dirname(checkpoint), params,
                                        {'device': 'cpu'})
  predict_fn = inputs.predict_input_fn(source, 'test', count, params)
  expected = []
  for prediction in estimator.predict(predict_fn, checkpoint_path=checkpoint,
                                      yield_single_examples=True):
    expected.append(prediction['probabilities'])
    if len(expected) == len(images):
      break
  expected = np.stack(expected)
  predict = load_saved_model(path)
  for name, values in ((SIGNATURE_PIXELS, images),
                       (SIGNATURE_BYTES, np.array(encoded, dtype=object))):
    got = predict(name, values)['probabilities']
    error = float(np.max(np.abs(got - expected)))
    if error > 1e-4:
      raise cli.UsageError('export check failed: signature %s differs from the '
                           'Estimator by %.3g on test images' % (name, error))
  return float(np.max(np.abs(predict(SIGNATURE_PIXELS, images)['probabilities']
                             - expected)))


def recover(export_dir):
  """Cleans up after export runs that were killed.

  Removes their EXPORT_DIR.tmp-PID directories and, when EXPORT_DIR is
  missing, renames back the previous export a killed --overwrite run had
  moved to EXPORT_DIR.old-PID (`writer.recover_interrupted`, the rule the
  dataset writer follows too). Returns the path restored, or None.
  """
  return writer.recover_interrupted(export_dir, 'saved_model.pb')


def _within(path, directory):
  """Whether `path` is `directory` or lies inside it (paths resolved)."""
  path, directory = os.path.realpath(path), os.path.realpath(directory)
  return path == directory or path.startswith(directory.rstrip(os.sep) +
                                              os.sep)


def check_export_dir(model_dir, export_dir, overwrite):
  """UsageError for an EXPORT_DIR that would destroy what it is not.

  The export never touches its own run: EXPORT_DIR may not be MODEL_DIR,
  lie inside it or contain it. --overwrite replaces a previous export (a
  directory holding saved_model.pb) or an empty directory, nothing else.
  """
  if _within(export_dir, model_dir) or _within(model_dir, export_dir):
    raise cli.UsageError(
        '--export_dir %s %s --model_dir %s; export to a directory outside '
        'the run' % (export_dir, 'is' if _within(model_dir, export_dir) and
                     _within(export_dir, model_dir) else
                     'lies inside' if _within(export_dir, model_dir) else
                     'contains', model_dir))
  if (overwrite and os.path.lexists(export_dir) and
      not os.path.isfile(os.path.join(export_dir, 'saved_model.pb')) and
      not (os.path.isdir(export_dir) and not os.listdir(export_dir))):
    raise cli.UsageError('--export_dir %s exists and is not an export (no '
                         'saved_model.pb); --overwrite replaces a previous '
                         'export only' % export_dir)


def export(model_dir, export_dir, checkpoint=None, data_dir=None,
           overwrite=False, verify_images=16, printer=print):
  """Exports, verifies and renames into place; returns export_dir."""
  export_dir = os.path.abspath(export_dir)
  check_export_dir(model_dir, export_dir, overwrite)
  model_dir_lib.check_writable(export_dir, '--export_dir')
  restored = recover(export_dir)
  if restored:
    printer('restored the previous export from %s' % restored)
  params = params_lib.load(model_dir)
  if data_dir:
    params['data_dir'] = data_dir
  if checkpoint:
    model_dir_lib.check_checkpoint(checkpoint, '--checkpoint')
  checkpoint = checkpoint or model_dir_lib.latest_checkpoint(model_dir)
  if not checkpoint:
    raise cli.UsageError('no checkpoint in %s: train first' % model_dir)
  model_dir_lib.check_checkpoint(checkpoint)
  if os.path.exists(export_dir) and not overwrite:
    raise cli.UsageError('%s exists; pass --overwrite to replace it'
                         % export_dir)
  parent = os.path.dirname(export_dir)
  model_dir_lib.prepare(parent, '--export_dir')
  with sources.reading(params['data_dir'], params['dataset']):
    _export(params, checkpoint, export_dir, verify_images, printer,
            replace=os.path.exists(export_dir))
  return export_dir


def _export(params, checkpoint, export_dir, verify_images, printer, replace):
  """`export` once its checks passed, holding the data's shared locks.

  `replace`: EXPORT_DIR existed (and --overwrite was given). Otherwise an
  EXPORT_DIR that another export created meanwhile is not replaced.
  """
  source = sources.resolve(params['data_dir'], params['dataset'])
  norm = preprocessing.norm_spec(source.info, params['normalization'],
                                 source.dataset_dir)
  tmp = '%s.tmp-%d' % (export_dir, os.getpid())
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  try:
    write_saved_model(params, norm, checkpoint, tmp)
    if verify_images > 0:
      error = verify(tmp, params, source, checkpoint, verify_images)
      printer('verified: SavedModel == Estimator on %d test images (max '
              '|Δp| %.2g)' % (verify_images, error))
    try:
      writer.replace_directory(tmp, export_dir, replace=replace)
    except OSError as e:
      if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
        raise
      raise cli.RunError('%s already exists: another export wrote it '
                         'meanwhile; it was left as it is' % export_dir)
  except (OSError, tf.errors.OpError) as e:
    reason = model_dir_lib.write_failure(e)
    if not reason:
      raise
    raise cli.RunError('cannot write %s (disk full or file-size limit?); %s'
                       % (reason, '%s is unchanged' % export_dir
                          if os.path.exists(export_dir)
                          else 'nothing was exported'))
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
  printer('exported %s (step %d) to %s'
          % (checkpoint, model_dir_lib.checkpoint_step(checkpoint), export_dir))


def main(argv):
  del argv
  if not FLAGS.model_dir or not FLAGS.export_dir:
    raise cli.UsageError('--model_dir and --export_dir are required')
  export(cli.resolve_path(FLAGS.model_dir), cli.resolve_path(FLAGS.export_dir),
         checkpoint=cli.resolve_path(FLAGS.checkpoint),
         data_dir=cli.resolve_path(FLAGS.data_dir), overwrite=FLAGS.overwrite,
         verify_images=FLAGS.verify_images)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
