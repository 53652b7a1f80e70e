"""Backbones: `get(name)` returns `build(images, training, params)`.

`build` maps float32 normalised images [B, H, W, C] to the float32 embedding
[B, D] after the final global average pool; the classifier head is not part
of it. `training` is a Python bool. Call it under
`tf.compat.v1.variable_scope(..., reuse=tf.compat.v1.AUTO_REUSE)` so repeated
calls share every variable.

| name      | D                         | source                           |
| --------- | ------------------------- | -------------------------------- |
| `convnet` | 128                       | SESEMI 13-layer max-pool ConvNet |
| `nin`     | 192                       | SESEMI Network-in-Network        |
| `wrn`     | 128                       | SESEMI WRN-28-2 with max pooling |
| `resnet`  | filters * 2^(scales - 1)  | libml pre-activation ResNet      |
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
