r"""Exports a trained model as a SavedModel that takes images, not tensors.

  python launch/export.py --model_dir=runs/sesemi --export_dir=exported/sesemi

Signatures (tag 'serve'):
  serving_default  pixels:      uint8 [N, H, W, C]
  predict_bytes    image_bytes: string [N], encoded PNG or JPEG
Both return `probabilities` [N, K], `classes` [N] and `logits` [N, K].
All preprocessing (scaling, standardisation, GCN, ZCA) runs inside the
graph, and the weights are the EMA weights when the run kept an EMA: what
launch/eval.py reports as 'ema' is what the SavedModel serves. The
normalisation comes from MODEL_DIR (stored by train.py), and the check runs
on the test images train.py stored there, so the data directory is not
needed; ZCA is a variable of the SavedModel (normalization/zca_matrix), not
a graph constant. Model directories from before that fall back to the data
directory (params.json's data_dir or --data_dir).

--onnx (TensorFlow 2 only: the tf2 flavour) also writes the pixels
signature as EXPORT_DIR/model.onnx (tf2onnx, opset 15; input `pixels`
uint8 [N,H,W,C], outputs probabilities, classes, logits) and checks ONNX
Runtime's probabilities against the SavedModel's (max |Δp| <= 1e-5) before
the rename. The bytes signature stays SavedModel-only: its decode_image
does not convert.

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
from runner import quiet  # pylint: disable=unused-import  (before TensorFlow)
from absl import flags
from google.protobuf import message
import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import fileio
from input_pipeline import preprocessing
from input_pipeline import records
from input_pipeline import runtime
from input_pipeline import sources
from input_pipeline.errors import DataError
from model_fns import core
from runner import cli
from runner import devices
from runner import model_dir as model_dir_lib
from runner import params as params_lib

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
  flags.DEFINE_bool('onnx', False, 'Also write the pixels signature as '
                    'EXPORT_DIR/model.onnx (needs the tf2 flavour).')


NORM_SCOPE = 'normalization'
ONNX_FILE = 'model.onnx'
ONNX_OPSET = 15
ONNX_TOLERANCE = 1e-5


def _serving_norm(norm):
  """(norm with ZCA as variables, [(variable, value)] to load).

  The ZCA mean and matrix become non-trainable variables (zeros until
  loaded), so the SavedModel keeps them under variables/ rather than as a
  D×D constant in its graph.
  """
  norm = {k: v for k, v in norm.items() if k != 'zca_files'}
  loads = []
  with tf.variable_scope(NORM_SCOPE):
    for key in ('zca_mean', 'zca_matrix'):
      if key in norm:
        value = np.asarray(norm[key], np.float32)
        variable = tf.get_variable(key, value.shape, tf.float32,
                                   initializer=tf.zeros_initializer(),
                                   trainable=False)
        loads.append((variable, value))
        norm[key] = variable
  return norm, loads


def build_serving_graph(params, norm, with_bytes=True):
  """Builds the serving graph in the default graph.

  Returns (inputs, outputs, loads): the input placeholders by name
  (`pixels`, and `image_bytes` when `with_bytes`), the model's predictions
  dict and the normalisation variables' values to load after restoring.
  """
  height, width, channels = params['image_shape']
  shape = [None, height, width, channels]
  inputs_by_name = {}
  if with_bytes:
    image_bytes = tf.placeholder(tf.string, [None], name='image_bytes')

    def decode(data):
      image = tf.image.decode_image(data, channels=channels,
                                    expand_animations=False)
      return tf.ensure_shape(image, [height, width, channels])

    decoded = tf.map_fn(decode, image_bytes, dtype=tf.uint8,
                        back_prop=False)
    # Feeding `pixels` bypasses the decoder; feeding `image_bytes` uses it.
    pixels = tf.placeholder_with_default(decoded, shape, name='pixels')
    inputs_by_name['image_bytes'] = image_bytes
  else:
    pixels = tf.placeholder(tf.uint8, shape, name='pixels')
  inputs_by_name['pixels'] = pixels
  norm, loads = _serving_norm(norm)
  images = preprocessing.normalize(pixels, norm)
  spec = core.model_fn({'image': images}, None, tf.estimator.ModeKeys.PREDICT,
                       params)
  return inputs_by_name, spec.predictions, loads


def _restore(sess, checkpoint, loads):
  """Restores the model's variables, then loads the normalisation's."""
  skip = {variable.op.name for variable, _ in loads}
  saver = tf.train.Saver([v for v in tf.global_variables()
                          if v.op.name not in skip])
  saver.restore(sess, checkpoint)
  for variable, value in loads:
    variable.load(value, sess)


def write_saved_model(params, norm, checkpoint, path):
  """Writes the SavedModel with both signatures to `path`."""
  with tf.Graph().as_default():
    tensors, outputs, loads = build_serving_graph(params, norm)
    with tf.Session() as sess:
      _restore(sess, checkpoint, loads)
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


def check_saved_model_runtime(path):
  """DataError when the SavedModel at `path` needs a newer TensorFlow.

  A SavedModel written by TF 2 does not load in TF 1.15 (its graph has
  attributes 1.15 does not know); a TF 1.15 one loads in TF 2. Model
  directories (checkpoints) work both ways.
  """
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  proto = saved_model_pb2.SavedModel()
  try:
    with open(os.path.join(path, 'saved_model.pb'), 'rb') as f:
      proto.ParseFromString(f.read())
  except (IOError, OSError) as e:
    raise DataError('%s is not a SavedModel: %s' % (path, e.strerror or e))
  except message.DecodeError:
    raise DataError('%s/saved_model.pb is corrupt' % path)
  for meta_graph in proto.meta_graphs:
    written_by = meta_graph.meta_info_def.tensorflow_version
    if written_by and int(written_by.split('.')[0]) > runtime.MAJOR:
      raise DataError(
          'the SavedModel %s was written by TensorFlow %s and does not load '
          'in TensorFlow %s: load it with the tf2 flavour (setup.sh '
          '--flavor=tf2), or export the model directory again with this one'
          % (path, written_by, runtime.VERSION))


def load_saved_model(path):
  """Returns predict(signature, array) for a SavedModel directory."""
  check_saved_model_runtime(path)
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


def write_onnx(params, norm, checkpoint, path):
  """Writes the pixels signature as an ONNX model (tf2onnx, TF 2 only)."""
  import tf2onnx  # pylint: disable=g-import-not-at-top
  import logging  # pylint: disable=g-import-not-at-top
  tf2onnx.logging.set_level(logging.ERROR)
  with tf.Graph().as_default():
    tensors, outputs, loads = build_serving_graph(params, norm,
                                                  with_bytes=False)
    names = sorted(outputs)
    fetch = [tf.identity(outputs[k], name='onnx/' + k) for k in names]
    with tf.Session() as sess:
      _restore(sess, checkpoint, loads)
      frozen = tf.graph_util.convert_variables_to_constants(
          sess, sess.graph.as_graph_def(), [t.op.name for t in fetch])
  tf2onnx.convert.from_graph_def(
      frozen, name='pixels', input_names=[tensors['pixels'].name],
      output_names=[t.name for t in fetch], opset=ONNX_OPSET,
      output_path=path)
  return names


def onnx_probabilities(path, images):
  """ONNX Runtime's probabilities for uint8 images [N,H,W,C]."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(path,
                                         providers=['CPUExecutionProvider'])
  (input_info,) = session.get_inputs()
  output = [o.name for o in session.get_outputs()
            if o.name.startswith('onnx/probabilities')]
  return session.run(output, {input_info.name: images})[0]


def verify_onnx(onnx_path, saved_model_path, images):
  """Max |Δp| of ONNX Runtime vs the SavedModel; UsageError above 1e-5."""
  expected = load_saved_model(saved_model_path)(SIGNATURE_PIXELS,
                                                images)['probabilities']
  got = onnx_probabilities(onnx_path, images)
  error = float(np.max(np.abs(got - expected)))
  if not error <= ONNX_TOLERANCE:
    raise cli.UsageError('export check failed: %s differs from the SavedModel '
                         'by %.3g (> %g) on the check images'
                         % (ONNX_FILE, error, ONNX_TOLERANCE))
  return error


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


def _array_input_fn(images, norm):
  """Predict input_fn over uint8 images [N,H,W,C], normalised as in training
  (the stored ZCA is read from its files, as the input pipeline does)."""
  def input_fn():
    dataset = tf.data.Dataset.from_tensor_slices(
        {'image': images, 'index': np.arange(len(images), dtype=np.int64)})
    tensors = preprocessing.graph_norm(norm)

    # Plain graph code: AutoGraph on TF 2.15 mis-resolved the closure here.
    @tf.autograph.experimental.do_not_convert
    def normalize(features):
      return dict(features,
                  image=preprocessing.normalize(features['image'], tensors))

    return dataset.batch(len(images)).map(normalize)
  return input_fn


def verify(path, params, images, checkpoint, norm):
  """Checks the SavedModel against the Estimator on uint8 `images`."""
  encoded = [records.encode_png(image) for image in images]
  estimator, _ = devices.make_estimator(os.path.dirname(checkpoint), params,
                                        {'device': 'cpu'})
  predict_fn = _array_input_fn(images, norm)
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
  moved to EXPORT_DIR.old-PID (`fileio.recover_interrupted`, the rule the
  dataset writer follows too). Returns the path restored, or None.
  """
  return fileio.recover_interrupted(export_dir, 'saved_model.pb')


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


def _norm_and_images(model_dir, params, count):
  """(normalisation, up to `count` check images) from MODEL_DIR, or from the
  data directory for what a model directory from before does not hold."""
  norm = (preprocessing.load_norm(model_dir)
          if preprocessing.has_saved_norm(model_dir) else None)
  images = model_dir_lib.load_check_images(model_dir) if count > 0 else None
  source = None
  if norm is None or (count > 0 and images is None):
    source = sources.resolve(params['data_dir'], params['dataset'])
  if norm is None:
    norm = preprocessing.norm_spec(source.info, params['normalization'],
                                   source.dataset_dir)
  if count > 0 and images is None:
    images, _ = test_images(source, count)
  return norm, (images[:count] if count > 0 else None)


def check_onnx_runtime():
  """UsageError when --onnx cannot run here (TF 1.15, or tf2onnx missing)."""
  if not runtime.TF2:
    raise cli.UsageError('--onnx needs the tf2 flavour (TensorFlow 2.15: bash '
                         'setup.sh --flavor=tf2); this is TensorFlow %s'
                         % runtime.VERSION)
  try:
    import tf2onnx  # pylint: disable=g-import-not-at-top,unused-import
    import onnxruntime  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise cli.UsageError('--onnx needs tf2onnx and onnxruntime (bash setup.sh '
                         '--flavor=tf2): %s' % e)


def export(model_dir, export_dir, checkpoint=None, data_dir=None,
           overwrite=False, verify_images=16, printer=print, onnx=False):
  """Exports, verifies and renames into place; returns export_dir."""
  if onnx:
    check_onnx_runtime()
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
    _export(model_dir, params, checkpoint, export_dir, verify_images, printer,
            replace=os.path.exists(export_dir), onnx=onnx)
  return export_dir


def _export(model_dir, params, checkpoint, export_dir, verify_images, printer,
            replace, onnx):
  """`export` once its checks passed, holding the data's shared locks (the
  data directory is read only for a model directory from before the
  normalisation was stored in it).

  `replace`: EXPORT_DIR existed (and --overwrite was given). Otherwise an
  EXPORT_DIR that another export created meanwhile is not replaced.
  """
  norm, images = _norm_and_images(model_dir, params, verify_images)
  tmp = '%s.tmp-%d' % (export_dir, os.getpid())
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  try:
    write_saved_model(params, norm, checkpoint, tmp)
    if verify_images > 0:
      error = verify(tmp, params, images, checkpoint, norm)
      printer('verified: SavedModel == Estimator on %d test images (max '
              '|Δp| %.2g)' % (len(images), error))
    if onnx:
      onnx_path = os.path.join(tmp, ONNX_FILE)
      write_onnx(params, norm, checkpoint, onnx_path)
      if verify_images > 0:
        error = verify_onnx(onnx_path, tmp, images)
        printer('verified: ONNX Runtime == SavedModel on %d test images (max '
                '|Δp| %.2g)' % (len(images), error))
    try:
      fileio.replace_directory(tmp, export_dir, replace=replace)
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
         verify_images=FLAGS.verify_images, onnx=FLAGS.onnx)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
