"""Backbones: `get(name)` returns `build(images, training, params)`.

The contract and each network's layers: docs/architecture.md.
"""

from model_fns.networks import convnet
from model_fns.networks import nin
from model_fns.networks import resnet
from model_fns.networks import wrn

_BUILDERS = {
    convnet.NAME: convnet.build,
    nin.NAME: nin.build,
    wrn.NAME: wrn.build,
    resnet.NAME: resnet.build,
}

NAMES = tuple(_BUILDERS)


def get(name):
  """Returns the `build(images, training, params)` function of `name`.

  Raises:
    ValueError: `name` is not one of NAMES.
  """
  if name not in _BUILDERS:
    raise ValueError('unknown network %r; choose one of: %s'
                     % (name, ', '.join(NAMES)))
  return _BUILDERS[name]
