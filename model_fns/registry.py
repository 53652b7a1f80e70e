"""Algorithm name -> module (`model_fns/<name>.py`), imported lazily.

What a module exposes: docs/architecture.md.
"""

import importlib

from model_fns import hparams

NAMES = ('supervised', 'sesemi', 'mixmatch', 'realmix', 'fixmatch', 'ict',
         'mean_teacher', 'pi_model', 'pseudo_label', 'vat', 'mixup',
         'uda', 'flexmatch', 'freematch', 'softmatch', 'remixmatch')


def get(name):
  """Returns the module of algorithm `name`.

  Raises:
    ValueError: `name` is not in NAMES, or its module is not in this build.
  """
  if name not in NAMES:
    raise ValueError('unknown algorithm %r; known: %s'
                     % (name, ', '.join(NAMES)))
  module_name = 'model_fns.' + name
  try:
    return importlib.import_module(module_name)
  except ImportError as e:
    # Only the algorithm's own module missing is a usage problem; a missing
    # dependency inside it is a bug and propagates unchanged.
    if getattr(e, 'name', None) != module_name:
      raise
    raise ValueError('algorithm %r is not available: module %s is missing'
                     % (name, module_name.replace('.', '/') + '.py'))


def default_train_steps(params, counts):
  """Number of training steps (the schedule length) for resolved params.

  `params['train_steps']` wins when positive. Otherwise the algorithm module
  named by `params['algorithm']` decides when it defines
  `train_steps(params, counts)` (SESEMI counts epochs over its image pool);
  the fallback is libml's convention, `epochs` units of 65536 labeled images:
  `epochs * 65536 // batch_size`.

  Args:
    params: resolved params dict.
    counts: dict part -> number of images (`labeled`, `unlabeled`, `valid`,
      `test`, `train`), as in `input_pipeline.sources.DataSource.counts`.

  Returns:
    A positive int.

  Raises:
    ValueError: neither `train_steps` nor `epochs` is positive.
  """
  if params['train_steps'] > 0:
    return int(params['train_steps'])
  if params['epochs'] <= 0:
    raise ValueError('set --train_steps or --epochs to a positive value')
  module = get(params['algorithm'])
  if hasattr(module, 'train_steps'):
    steps = module.train_steps(params, counts)
  else:
    steps = (params['epochs'] * hparams.LIBML_EPOCH_IMAGES //
             params['batch_size'])
  return max(1, int(steps))
