"""Flags -> a validated params dict, and params.json in the model directory.

Every hyperparameter is an absl flag of the same name (default None):
COMMON_DEFAULTS < algorithm DEFAULTS < --flagfile < explicit flags. See
docs/architecture.md.
"""

import json
import os

from absl import flags

from input_pipeline import fileio
from input_pipeline import sources
from model_fns import hparams
from model_fns import networks
from model_fns import registry
from model_fns import spec
from runner import cli
from runner import model_dir as model_dir_lib

# Keys that may differ when resuming: they change what is fed or for how
# long, not the graph that the checkpoint holds.
RESUMABLE_KEYS = frozenset([
    'data_dir', 'dataset', 'train_steps', 'epochs', 'shuffle_buffer',
    'cache_images', 'seed', 'scaled_keys',
])

# Ramps given in absolute units, which follow the run's length unless set
# (`scale_schedules`). The other ramps are fractions of train_steps already:
# warmup_pos (Π-model, Mean Teacher, ICT, Pseudo-Label), TSA's progress and
# the poly / cosine learning-rate decay.
SCALED_KEYS = ('warmup_kimg',)
KIMG = 1024

# Data facts added by launch, not flags.
DATA_KEYS = ('num_classes', 'image_shape', 'dataset', 'data_dir')

PARAMS_FILE = 'params.json'


def _all_defaults():
  """Returns {key: default} over the common keys and every algorithm's."""
  merged = dict(hparams.COMMON_DEFAULTS)
  for name in registry.NAMES:
    for key, value in registry.get(name).DEFAULTS.items():
      if key not in merged or merged[key] is None:
        merged[key] = value
      elif isinstance(value, float) and isinstance(merged[key], int) and (
          not isinstance(merged[key], bool)):
        merged[key] = value  # A float anywhere makes the flag a float.
  return merged


def define_flags():
  """Defines one flag per hyperparameter (default None) and launch's flags."""
  for key, value in sorted(_all_defaults().items()):
    if key in flags.FLAGS:
      continue
    help_text = 'hyperparameter (default: the algorithm\'s, else %r)' % (value,)
    if isinstance(value, bool):
      flags.DEFINE_bool(key, None, help_text)
    elif isinstance(value, int):
      flags.DEFINE_integer(key, None, help_text)
    elif isinstance(value, float):
      flags.DEFINE_float(key, None, help_text)
    else:
      flags.DEFINE_string(key, None, help_text)
  flags.DEFINE_float('base_lr', None, 'alias of --lr (the SESEMI seed\'s name)')


def reorder_flagfiles(argv):
  """Moves --flagfile arguments to the front so explicit flags override them."""
  files, rest = [], []
  i = 1
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--flagfile='):
      files.append(arg)
    elif arg in ('--flagfile', '-flagfile') and i + 1 < len(argv):
      files.append('--flagfile=' + argv[i + 1])
      i += 1
    else:
      rest.append(arg)
    i += 1
  return argv[:1] + files + rest


def data_facts(source, data_dir, dataset):
  """The `resolve` data facts of a resolved source (sources.resolve)."""
  return {'num_classes': int(source.info['num_classes']),
          'image_shape': list(source.info['image_shape']),
          'dataset': dataset, 'data_dir': data_dir}


def resolve(flag_values, data_facts):
  """Returns the params dict for the flags given and the data's facts.

  Args:
    flag_values: absl FlagValues after parsing.
    data_facts: dict with num_classes, image_shape, dataset, data_dir.

  Raises:
    cli.UsageError: for an unknown algorithm or an invalid value.
  """
  bad = cli.non_finite_flag(flag_values)
  if bad:  # cli.run refuses it at parsing; this covers in-process callers.
    raise cli.UsageError('%s: a flag value must be a finite number' % bad)
  algorithm_name = flag_values['algorithm'].value or (
      hparams.COMMON_DEFAULTS['algorithm'])
  try:
    algorithm = registry.get(algorithm_name)
  except ValueError as e:
    raise cli.UsageError('--algorithm: %s' % e)
  params = dict(hparams.COMMON_DEFAULTS)
  params.update(algorithm.DEFAULTS)
  params['algorithm'] = algorithm_name
  for key in _all_defaults():
    if key in flag_values and flag_values[key].value is not None:
      params[key] = flag_values[key].value
  if flag_values['base_lr'].value is not None:
    params['lr'] = flag_values['base_lr'].value
  params.update(data_facts)
  params['image_shape'] = [int(d) for d in params['image_shape']]
  validate(params)
  return params


def explicit_keys(flag_values):
  """Hyperparameters the user set, in a --flagfile or on the command line."""
  keys = set(k for k in _all_defaults()
             if k in flag_values and flag_values[k].value is not None)
  if flag_values['base_lr'].value is not None:
    keys.add('lr')
  return keys


def scale_schedules(params, explicit):
  """Scales absolute ramps with the run's length, in the reference's
  proportions, unless the user set them (`explicit`).

  `warmup_kimg` (MixMatch, RealMix: the unlabeled-loss weight's warm-up in
  kibi labeled images) keeps the ratio of the algorithm's defaults to the
  algorithm's default run: libml's 1024 kimg of a 1024-epoch (65536-kimg)
  run, i.e. 1/64 of training; RealMix's 1024 kimg of 700 epochs. A run of
  `train_steps` steps of `batch_size` labeled images gets
  `default_warmup_kimg * run_kimg / default_run_kimg`; a run of the default
  length keeps the default. Scaled keys are listed in
  `params['scaled_keys']`, so that resuming with another `--train_steps`
  may change them.

  Args:
    params: resolved params with the final positive `train_steps`; updated
      in place.
    explicit: keys the user set (`explicit_keys`).
  """
  defaults = registry.get(params['algorithm']).DEFAULTS
  scaled = []
  for key in SCALED_KEYS:
    if key in explicit or key not in params or key not in defaults:
      continue
    epochs = defaults.get('epochs', hparams.COMMON_DEFAULTS['epochs'])
    if epochs <= 0 or defaults[key] <= 0:
      continue
    default_kimg = epochs * float(hparams.LIBML_EPOCH_IMAGES) / KIMG
    run_kimg = params['train_steps'] * params['batch_size'] / float(KIMG)
    params[key] = defaults[key] * run_kimg / default_kimg
    scaled.append(key)
  params['scaled_keys'] = scaled
  return params


def add_data_params(params, needs, source):
  """Adds to `params` the data facts the algorithm's input needs imply.

  With `needs.unlabeled_index` (FlexMatch's per-example state, sized by the
  pool the records' `index` addresses): `unlabeled_pool_size` and
  `unlabeled_index_range` (`sources.unlabeled_pool`).
  """
  if needs.unlabeled_index:
    params['unlabeled_pool_size'], params['unlabeled_index_range'] = (
        sources.unlabeled_pool(source, needs.unlabeled_keeps_labeled))


def validate(params):
  """Checks values a user can get wrong; raises cli.UsageError naming the flag."""
  if params['network'] not in networks.NAMES:
    raise cli.UsageError('--network: unknown network %r; known: %s'
                         % (params['network'], ', '.join(networks.NAMES)))
  for key in ('batch_size',):
    if params[key] <= 0:
      raise cli.UsageError('--%s must be positive, got %r' % (key, params[key]))
  if params['lr'] <= 0:
    raise cli.UsageError('--lr must be positive, got %r' % params['lr'])
  for key in ('train_steps', 'epochs', 'weight_decay', 'weight_decay_l2',
              'warmup_steps'):
    if params.get(key, 0) < 0:
      raise cli.UsageError('--%s must not be negative, got %r'
                           % (key, params[key]))
  if not 0 <= params['ema_decay'] < 1:
    raise cli.UsageError('--ema_decay must be in [0, 1), got %r'
                         % params['ema_decay'])
  for key, known in (('optimizer', spec.OPTIMIZERS),
                     ('lr_schedule', spec.SCHEDULES)):
    if params[key] not in known:
      raise cli.UsageError('--%s must be %s or %s, got %r'
                           % (key, ', '.join(known[:-1]), known[-1],
                              params[key]))
  shape = params['image_shape']
  if len(shape) != 3 or shape[0] != shape[1]:
    raise cli.UsageError('images must be square H×W×C, the dataset has %s'
                         % (shape,))


def graph_differences(old, new):
  """Keys whose values differ between two params dicts and change the graph."""
  keys = sorted((set(old) | set(new)) - RESUMABLE_KEYS)
  # A ramp scaled with the run's length in both follows train_steps.
  follow = set(old.get('scaled_keys') or ()) & set(new.get('scaled_keys') or ())
  return [k for k in keys
          if k not in follow and _norm(old.get(k)) != _norm(new.get(k))]


def _norm(value):
  return json.loads(json.dumps(value))


# What eval, export and report read from params.json before anything else.
REQUIRED_KEYS = ('algorithm', 'network', 'dataset', 'data_dir', 'image_shape',
                 'num_classes', 'normalization')


def load(model_dir):
  """Reads model_dir/params.json; raises cli.UsageError when absent."""
  path = os.path.join(model_dir, PARAMS_FILE)
  try:
    with open(path) as f:
      params = json.load(f)
  except (IOError, OSError):
    raise cli.UsageError('%s not found: is %s a model directory made by '
                         'launch/train.py?' % (path, model_dir))
  except ValueError as e:
    raise cli.UsageError('%s is not valid JSON: %s' % (path, e))
  if not isinstance(params, dict):
    raise cli.UsageError('%s holds a JSON %s, not the object launch/train.py '
                         'writes' % (path, type(params).__name__))
  missing = [k for k in REQUIRED_KEYS if k not in params]
  if missing:
    raise cli.UsageError('%s is incomplete: no %s' % (path, ', '.join(missing)))
  return params


def save_or_check(model_dir, params):
  """Writes params.json, or checks a resumed run's params against it.

  A params.json beside no checkpoint is replaced.

  A resumed run may change only RESUMABLE_KEYS; any other difference would
  restore a checkpoint into a different graph, so it is refused naming the
  keys. The file is written under a temporary name and renamed.
  """
  path = os.path.join(model_dir, PARAMS_FILE)
  # Without a checkpoint nothing depends on the old params (a start that
  # failed before the first save): they are replaced, not a reason to
  # refuse the corrected retry.
  if model_dir_lib.has_checkpoint(model_dir) and not os.path.exists(path):
    raise cli.UsageError(
        '%s holds checkpoints but no %s, so the params they were trained '
        'with are unknown; put it back or use a new --model_dir'
        % (model_dir, PARAMS_FILE))
  if os.path.exists(path) and model_dir_lib.has_checkpoint(model_dir):
    old = load(model_dir)
    diff = graph_differences(old, params)
    if diff:
      raise cli.UsageError(
          'cannot resume %s with different params: %s (use a new --model_dir)'
          % (model_dir, ', '.join('%s: %r -> %r' % (k, old.get(k), params.get(k))
                                  for k in diff)))
  fileio.write_atomic(path, json.dumps(params, indent=2, sort_keys=True) + '\n')


# A lower bound of the float32 values an image keeps alive in a step, per
# pixel: its channels plus the equivalent of 64 channels of activations
# (every network here has several full-resolution layers of at least 16
# filters). Only a batch that cannot fit even so is refused.
_ACTIVATION_CHANNELS = 64


def physical_memory_bytes():
  """This machine's RAM in bytes (None when unknown)."""
  try:
    return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (ValueError, OSError, AttributeError):
    return None


def check_batch_memory(flag, value, images, image_shape, memory=None):
  """cli.UsageError when `images` images of `image_shape` a step cannot fit.

  Such a batch otherwise ends in a C++ bad_alloc abort (exit 134) once
  TensorFlow allocates it. `flag`/`value`: the flag to name; `memory`:
  bytes available (default: the machine's RAM).
  """
  memory = memory or physical_memory_bytes()
  if not memory:
    return
  height, width, channels = image_shape
  need = images * 4 * height * width * (channels + _ACTIVATION_CHANNELS)
  if need > memory:
    raise cli.UsageError(
        '--%s=%d: a step of %d images of %dx%dx%d needs at least %.1f GB for '
        'its tensors, more than this machine\'s %.1f GB of memory; lower '
        '--%s' % (flag, value, images, height, width, channels,
                  need / 2. ** 30, memory / 2. ** 30, flag))
