"""Algorithm name -> module (`model_fns/<name>.py`), imported lazily.

What a module exposes: docs/architecture.md.
"""

import importlib

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
