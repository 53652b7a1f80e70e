"""Image augmentations as graph ops, stateless and seeded per image: the views
'none', 'weak', 'strong', 'realmix' and 'sesemi' (`view`).

Views, order of operations and fill conventions: docs/architecture.md.
"""

import math

import numpy as np
import tensorflow.compat.v1 as tf

from input_pipeline import needs
from input_pipeline import preprocessing

VIEWS = needs.VIEWS

# SESEMI's proxy labels (vuptran/sesemi utils.geometric_transform): label k
# in 0..3 is np.rot90(image, k) (counter-clockwise), 4 np.fliplr, 5 np.flipud.
NUM_PROXY = needs.NUM_PROXY

# RandAugment as in google-research/fixmatch (RandAugment with random
# magnitude, 'rac'): each of N ops is drawn uniformly with replacement from
# this list, applied with probability 0.5, at an integer level uniform in
# 1..9 out of RA_MAX_LEVEL (10). Magnitudes at level L:
#   Rotate      +-3L degrees (random sign), counter-clockwise about the centre
#   Solarize    invert pixels >= (256 - int(25.6 L)) / 255
#   Color, Contrast, Brightness, Sharpness
#               PIL ImageEnhance factor 0.1 + 0.18 L (blend with a degenerate
#               image: grey / mean grey / black / 3x3-smoothed)
#   Posterize   keep 4 - int(0.4 L) bits
#   ShearX/Y    +-0.03 L (random sign)
#   TranslateX/Y +-L pixels at width 32 (scaled with the image width)
#   Identity, AutoContrast, Equalize: no magnitude.
# Affine ops sample nearest-neighbour at pixel centres like PIL and fill
# pixels from outside the image with grey 0.5 (FixMatch's fill: transparent
# pixels become 0 in [-1, 1]).
RA_OPS = ('Identity', 'AutoContrast', 'Equalize', 'Rotate', 'Solarize',
          'Color', 'Posterize', 'Contrast', 'Brightness', 'Sharpness',
          'ShearX', 'ShearY', 'TranslateX', 'TranslateY')
RA_MAX_LEVEL = 10
RA_PROB = 0.5
RA_FILL = 0.5

# RealMix's colour jitter (uizard-technologies/realmix libml/data.py), in
# [0, 1] pixel space: brightness delta, hue delta, saturation and contrast
# factor ranges, applied in this order. The reference's brightness delta is
# 0.1 on its [-1, 1] pixels, i.e. 0.05 on [0, 1].
JITTER = {'brightness': 0.05, 'hue': 0.5, 'saturation': (0.1, 3.0),
          'contrast': (0.5, 1.5)}

# RealMix's cutout (the reference's random eraser, applied with p=0.3): with
# probability `prob`, a rectangle of area U(area) x H x W and aspect ratio
# (height / width) U(aspect), at a uniformly random position redrawn (with
# the size) until the rectangle fits, is filled with one value U(0, 1) in
# pixel space. Sides are truncated to integers. After MAX_ERASE_TRIES draws
# that do not fit, nothing is erased.
ERASE = {'prob': 0.3, 'area': (0.02, 0.4), 'aspect': (0.3, 1 / 0.3)}
MAX_ERASE_TRIES = 100

_INT32_MAX = 2**31 - 1


def split_seed(seed, num):
  """Derives `num` independent seeds ([num, 2] int64) from one [2] seed."""
  return tf.random.stateless_uniform(
      [num, 2], seed=seed, minval=-_INT32_MAX, maxval=_INT32_MAX,
      dtype=tf.int64)


def _uniform(seed, minval=0., maxval=1.):
  return tf.random.stateless_uniform([], seed=seed, minval=minval,
                                     maxval=maxval)


def _randint(seed, minval, maxval):
  """Uniform int32 in [minval, maxval)."""
  return tf.random.stateless_uniform([], seed=seed, minval=minval,
                                     maxval=maxval, dtype=tf.int32)


def _coin(seed):
  return _uniform(seed) < 0.5


def to_unit(image):
  """uint8 image (any rank) -> float32 in [0, 1]."""
  return tf.cast(image, tf.float32) / 255.


# ---------------------------------------------------------------------------
# Geometric and noise operations (on normalised images, [H, W, C]).
# ---------------------------------------------------------------------------


def flip_left_right(image, seed):
  """Mirrors the image left-right with probability 1/2."""
  return tf.cond(_coin(seed), lambda: tf.reverse(image, [1]), lambda: image)


def pad_crop(image, pad, seed):
  """Reflect-pads by `pad` pixels and takes a random window of the input size.

  The window's top-left corner is uniform in {0..2*pad}^2 of the padded image
  (libml's weak augmentation with pad 4).
  """
  if pad <= 0:
    return image
  height, width = image.shape.as_list()[:2]
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  seeds = split_seed(seed, 2)
  top = _randint(seeds[0], 0, 2 * pad + 1)
  left = _randint(seeds[1], 0, 2 * pad + 1)
  return tf.slice(padded, [top, left, 0], [height, width, -1])


def shift_by(image, dy, dx, max_shift):
  """Moves the content by (dy, dx) pixels, filling with the mirror image.

  out[y, x] = ext[y - dy, x - dx] where `ext` extends the image
  symmetrically (edge pixel repeated, numpy 'symmetric'); |dy|, |dx| must
  not exceed `max_shift`.
  """
  height, width = image.shape.as_list()[:2]
  padded = tf.pad(image, [[max_shift, max_shift], [max_shift, max_shift],
                          [0, 0]], mode='SYMMETRIC')
  return tf.slice(padded, [max_shift - dy, max_shift - dx, 0],
                  [height, width, -1])


def random_shift(image, max_shift, seed):
  """Integer shift uniform in {-max_shift..max_shift} on each axis (SESEMI)."""
  if max_shift <= 0:
    return image
  seeds = split_seed(seed, 2)
  dy = _randint(seeds[0], -max_shift, max_shift + 1)
  dx = _randint(seeds[1], -max_shift, max_shift + 1)
  return shift_by(image, dy, dx, max_shift)


def gaussian_noise(image, std, seed):
  """Adds i.i.d. N(0, std^2) noise."""
  if std <= 0:
    return image
  return image + std * tf.random.stateless_normal(tf.shape(image), seed=seed)


def cutout_at(image, center_y, center_x, size):
  """Sets to 0 the size x size square whose top-left is center - size // 2.

  The square is clipped at the image borders.
  """
  height, width = image.shape.as_list()[:2]
  top = center_y - size // 2
  left = center_x - size // 2
  rows = tf.range(height)[:, None]
  cols = tf.range(width)[None, :]
  inside = ((rows >= top) & (rows < top + size) &
            (cols >= left) & (cols < left + size))
  keep = 1. - tf.cast(inside, image.dtype)[:, :, None]
  return image * keep


def random_cutout(image, size, seed):
  """Cutout of a size x size square at a uniformly random centre, fill 0."""
  if size <= 0:
    return image
  height, width = image.shape.as_list()[:2]
  seeds = split_seed(seed, 2)
  return cutout_at(image, _randint(seeds[0], 0, height),
                   _randint(seeds[1], 0, width), size)


def cutout_size(params, width):
  """The cutout side in pixels: cutout_frac * width."""
  return int(params['cutout_frac'] * width)


# ---------------------------------------------------------------------------
# Pixel-value operations (on [0, 1] images, [H, W, C]).
# ---------------------------------------------------------------------------


def erase_box(seed, height, width, area=ERASE['area'],
              aspect=ERASE['aspect'], max_tries=MAX_ERASE_TRIES):
  """(top, left, box height, box width, found) of RealMix's random eraser.

  Each try draws the area fraction, the aspect ratio and the top-left
  corner; the first box inside the image is returned (`found` False, and a
  0 x 0 box, when none of `max_tries` fits).
  """
  seed = tf.cast(seed, tf.int64)

  def draw(i):
    u = tf.random.stateless_uniform(
        [4], seed=seed + tf.stack([tf.cast(i, tf.int64), tf.constant(0, tf.int64)]))
    size = (area[0] + (area[1] - area[0]) * u[0]) * float(height * width)
    ratio = aspect[0] + (aspect[1] - aspect[0]) * u[1]
    box_w = tf.cast(tf.floor(tf.sqrt(size / ratio)), tf.int32)
    box_h = tf.cast(tf.floor(tf.sqrt(size * ratio)), tf.int32)
    left = tf.minimum(tf.cast(u[2] * width, tf.int32), width - 1)
    top = tf.minimum(tf.cast(u[3] * height, tf.int32), height - 1)
    fits = (left + box_w <= width) & (top + box_h <= height)
    return top, left, box_h, box_w, fits

  def cond(i, *state):
    return tf.logical_and(i < max_tries, tf.logical_not(state[-1]))

  def body(i, *unused_state):
    return (i + 1,) + draw(i)

  zero = tf.constant(0, tf.int32)
  result = tf.while_loop(cond, body,
                         (zero, zero, zero, zero, zero, tf.constant(False)))
  top, left, box_h, box_w, found = result[1:]
  keep = tf.cast(found, tf.int32)
  return top, left, box_h * keep, box_w * keep, found


def random_erase(image, seed, prob=ERASE['prob']):
  """RealMix's cutout of a [0, 1] image [H, W, C] (see ERASE)."""
  height, width = image.shape.as_list()[:2]
  seeds = split_seed(seed, 3)
  top, left, box_h, box_w, _ = erase_box(seeds[1], height, width)
  rows = tf.range(height)[:, None]
  cols = tf.range(width)[None, :]
  inside = ((rows >= top) & (rows < top + box_h) &
            (cols >= left) & (cols < left + box_w))
  inside &= _uniform(seeds[0]) < prob
  fill = _uniform(seeds[2])
  return tf.where(tf.broadcast_to(inside[:, :, None], tf.shape(image)),
                  tf.fill(tf.shape(image), fill), image)



def color_jitter(image, seed, brightness=JITTER['brightness'],
                 hue=JITTER['hue'], saturation=JITTER['saturation'],
                 contrast=JITTER['contrast']):
  """Random brightness, hue, saturation and contrast; output in [0, 1].

  Hue and saturation apply to 3-channel images only.
  """
  seeds = split_seed(seed, 4)
  image = tf.image.adjust_brightness(
      image, _uniform(seeds[0], -brightness, brightness))
  if image.shape.as_list()[-1] == 3:
    image = tf.image.adjust_hue(image, _uniform(seeds[1], -hue, hue))
    image = tf.clip_by_value(image, 0., 1.)
    image = tf.image.adjust_saturation(image, _uniform(seeds[2], *saturation))
  image = tf.image.adjust_contrast(image, _uniform(seeds[3], *contrast))
  return tf.clip_by_value(image, 0., 1.)


def _grayscale(image):
  """PIL 'L' luminance (ITU-R 601-2), keeping one channel."""
  if image.shape.as_list()[-1] == 1:
    return image
  weights = tf.constant([0.299, 0.587, 0.114], image.dtype)
  return tf.reduce_sum(image * weights, axis=-1, keepdims=True)


def _blend(degenerate, image, factor):
  """PIL ImageEnhance: degenerate + factor * (image - degenerate), clipped."""
  return tf.clip_by_value(degenerate + factor * (image - degenerate), 0., 1.)


def _quantize(image):
  return tf.cast(tf.round(image * 255.), tf.int32)


def autocontrast(image):
  """Stretches each channel linearly so that its min is 0 and its max 1."""
  low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
  high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
  scale = tf.where(high > low, 1. / tf.maximum(high - low, 1e-12),
                   tf.ones_like(high))
  offset = tf.where(high > low, low, tf.zeros_like(low))
  return tf.clip_by_value((image - offset) * scale, 0., 1.)


def _equalize_channel(values):
  """PIL ImageOps.equalize on one channel of int32 values in 0..255."""
  hist = tf.math.bincount(values, minlength=256, maxlength=256)
  last = tf.gather(hist, tf.reduce_max(values))
  step = (tf.reduce_sum(hist) - last) // 255
  safe_step = tf.maximum(step, 1)
  lut = (safe_step // 2 + tf.cumsum(hist, exclusive=True)) // safe_step
  lut = tf.minimum(lut, 255)
  return tf.cond(step > 0, lambda: tf.gather(lut, values), lambda: values)


def equalize(image):
  """Histogram equalisation per channel on the 8-bit values (PIL's)."""
  values = _quantize(image)
  channels = [_equalize_channel(values[:, :, c])
              for c in range(image.shape.as_list()[-1])]
  return tf.cast(tf.stack(channels, axis=-1), tf.float32) / 255.


def solarize(image, threshold):
  """Inverts every pixel whose 8-bit value is >= threshold (in 0..256)."""
  return tf.where(_quantize(image) >= threshold, 1. - image, image)


def posterize(image, bits):
  """Keeps the `bits` most significant bits of each 8-bit value."""
  shift = 8 - bits
  values = tf.bitwise.left_shift(
      tf.bitwise.right_shift(_quantize(image), shift), shift)
  return tf.cast(values, tf.float32) / 255.


def adjust_color(image, factor):
  """PIL ImageEnhance.Color: blend with the grey image."""
  return _blend(_grayscale(image), image, factor)


def adjust_contrast(image, factor):
  """PIL ImageEnhance.Contrast: blend with the mean grey level."""
  mean = tf.reduce_mean(_grayscale(image))
  return _blend(mean, image, factor)


def adjust_brightness(image, factor):
  """PIL ImageEnhance.Brightness: blend with black."""
  return _blend(tf.zeros_like(image), image, factor)


def adjust_sharpness(image, factor):
  """PIL ImageEnhance.Sharpness: blend with the 3x3 SMOOTH-filtered image.

  The SMOOTH kernel is [[1,1,1],[1,5,1],[1,1,1]] / 13; border pixels of the
  degenerate image are the original ones, as in PIL.
  """
  height, width, channels = image.shape.as_list()
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1],
                                  'VALID')[0]
  smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  interior = tf.pad(tf.ones([height - 2, width - 2, 1]), [[1, 1], [1, 1],
                                                          [0, 0]])
  degenerate = interior * smooth + (1. - interior) * image
  return _blend(degenerate, image, factor)


def affine(image, matrix, fill=RA_FILL):
  """PIL Image.transform(AFFINE, matrix) with nearest sampling.

  For the output pixel centre (x + .5, y + .5) the input position is
  (a x' + b y' + c, d x' + e y' + f) with matrix = (a, b, c, d, e, f); it is
  floored to a pixel index, and positions outside the image give `fill`.
  """
  height, width = image.shape.as_list()[:2]
  a, b, c, d, e, f = [tf.cast(m, tf.float32) for m in matrix]
  ys, xs = np.meshgrid(np.arange(height, dtype=np.float32) + .5,
                       np.arange(width, dtype=np.float32) + .5, indexing='ij')
  src_x = tf.cast(tf.floor(a * xs + b * ys + c), tf.int32)
  src_y = tf.cast(tf.floor(d * xs + e * ys + f), tf.int32)
  valid = ((src_x >= 0) & (src_x < width) & (src_y >= 0) & (src_y < height))
  index = tf.stack([tf.clip_by_value(src_y, 0, height - 1),
                    tf.clip_by_value(src_x, 0, width - 1)], axis=-1)
  gathered = tf.gather_nd(image, index)
  valid = tf.cast(valid, image.dtype)[:, :, None]
  return gathered * valid + fill * (1. - valid)


def rotate(image, degrees, fill=RA_FILL):
  """PIL Image.rotate(degrees): counter-clockwise about the image centre."""
  height, width = image.shape.as_list()[:2]
  angle = -tf.cast(degrees, tf.float32) * (math.pi / 180.)
  cos, sin = tf.cos(angle), tf.sin(angle)
  cx, cy = width / 2., height / 2.
  return affine(image, (cos, sin, cx - cos * cx - sin * cy,
                        -sin, cos, cy + sin * cx - cos * cy), fill)


def shear_x(image, shear, fill=RA_FILL):
  return affine(image, (1., shear, 0., 0., 1., 0.), fill)


def shear_y(image, shear, fill=RA_FILL):
  return affine(image, (1., 0., 0., shear, 1., 0.), fill)


def translate_x(image, pixels, fill=RA_FILL):
  return affine(image, (1., 0., pixels, 0., 1., 0.), fill)


def translate_y(image, pixels, fill=RA_FILL):
  return affine(image, (1., 0., 0., 0., 1., pixels), fill)


def _ra_branches(image, level, sign):
  """The RA_OPS as zero-argument callables at an int32 `level`."""
  width = image.shape.as_list()[1]
  levelf = tf.cast(level, tf.float32)
  factor = 0.1 + levelf * 1.8 / RA_MAX_LEVEL
  shear = sign * levelf * 0.3 / RA_MAX_LEVEL
  pixels = sign * tf.round(levelf * width / 32.)
  degrees = sign * tf.cast(level * 30 // RA_MAX_LEVEL, tf.float32)
  branches = {
      'Identity': lambda: image,
      'AutoContrast': lambda: autocontrast(image),
      'Equalize': lambda: equalize(image),
      'Rotate': lambda: rotate(image, degrees),
      'Solarize': lambda: solarize(image, 256 - level * 256 // RA_MAX_LEVEL),
      'Color': lambda: adjust_color(image, factor),
      'Posterize': lambda: posterize(image, 4 - level * 4 // RA_MAX_LEVEL),
      'Contrast': lambda: adjust_contrast(image, factor),
      'Brightness': lambda: adjust_brightness(image, factor),
      'Sharpness': lambda: adjust_sharpness(image, factor),
      'ShearX': lambda: shear_x(image, shear),
      'ShearY': lambda: shear_y(image, shear),
      'TranslateX': lambda: translate_x(image, pixels),
      'TranslateY': lambda: translate_y(image, pixels),
  }
  return [branches[name] for name in RA_OPS]


def apply_ra_op(image, op_index, level, sign=1.):
  """Applies RA_OPS[op_index] (int32 tensor) at `level`; `sign` +-1."""
  return tf.switch_case(op_index, _ra_branches(image, level, sign))


def rand_augment(image, num_ops, seed, prob=RA_PROB):
  """FixMatch's RandAugment on a [0, 1] image: `num_ops` random ops.

  Each op is drawn uniformly from RA_OPS (with replacement), applied with
  probability `prob` at a level uniform in 1..RA_MAX_LEVEL-1 and a random
  sign for the signed ops. The output stays in [0, 1].
  """
  shape = image.shape
  seeds = split_seed(seed, 4 * num_ops)
  for i in range(num_ops):
    op = _randint(seeds[4 * i], 0, len(RA_OPS))
    applied = _uniform(seeds[4 * i + 1]) < prob
    op = tf.where(applied, op, tf.zeros_like(op))
    level = _randint(seeds[4 * i + 2], 1, RA_MAX_LEVEL)
    sign = tf.where(_coin(seeds[4 * i + 3]), 1., -1.)
    image = apply_ra_op(image, op, level, sign)
    image.set_shape(shape)
  return image


# ---------------------------------------------------------------------------
# SESEMI proxy transforms and the named views.
# ---------------------------------------------------------------------------


def proxy_transforms(images):
  """SESEMI's 6 geometric transforms of each image.

  Args:
    images: float [P, H, W, C] with H == W.

  Returns:
    (images [P*6, H, W, C], labels int64 [P*6]): rows 6p..6p+5 are image p
    rotated counter-clockwise by 0, 90, 180, 270 degrees (labels 0..3), flipped
    left-right (4) and up-down (5).
  """
  shape = images.shape.as_list()
  if shape[1] != shape[2]:
    raise ValueError('proxy transforms need square images, got %dx%d'
                     % (shape[1], shape[2]))
  transformed = [tf.image.rot90(images, k) for k in range(4)]
  transformed += [tf.reverse(images, [2]), tf.reverse(images, [1])]
  stacked = tf.stack(transformed, axis=1)
  labels = tf.tile(tf.range(NUM_PROXY, dtype=tf.int64), [shape[0]])
  return tf.reshape(stacked, [shape[0] * NUM_PROXY] + shape[1:]), labels


def _weak(image, params, seed):
  seeds = split_seed(seed, 2)
  if params['aug_flip']:
    image = flip_left_right(image, seeds[0])
  return pad_crop(image, params['aug_crop_pad'], seeds[1])


def _check_view(name):
  if name not in VIEWS:
    raise ValueError('unknown view %r; known views: %s'
                     % (name, ', '.join(VIEWS)))


def view_pixels(image01, name, params, seed):
  """First half of `view`: the pixel-value ops, on the [0, 255] scale.

  Args:
    image01: float32 [H, W, C] in [0, 1].
    name: one of VIEWS.
    params: see `view`.
    seed: int64 [2] tensor.

  Returns:
    float32 [H, W, C] in [0, 255], ready for preprocessing.normalize.
  """
  _check_view(name)
  if name == 'strong':
    image01 = rand_augment(image01, params['randaugment_ops'], seed)
  elif name == 'realmix':
    # The reference's order: cutout, (flip,) colour, (crop).
    erase_seed, jitter_seed = view_seeds(seed)
    image01 = color_jitter(random_erase(image01, erase_seed), jitter_seed)
  return image01 * 255.


def view_geometry(image, name, params, seed):
  """Second half of `view`: geometric and noise ops on a normalised image."""
  _check_view(name)
  seeds = split_seed(seed, 3)
  width = image.shape.as_list()[1]
  if name in ('weak', 'strong', 'realmix'):
    image = _weak(image, params, seeds[0])
  if name == 'strong':
    image = random_cutout(image, cutout_size(params, width), seeds[1])
  if name == 'sesemi':
    image = random_shift(image, params['aug_shift'], seeds[0])
    if params['aug_flip']:
      image = flip_left_right(image, seeds[1])
    image = gaussian_noise(image, params['aug_noise_std'], seeds[2])
  return image


def view_seeds(seed):
  """(pixel seed, geometry seed) of `view`'s two halves from its seed."""
  seeds = split_seed(seed, 2)
  return seeds[0], seeds[1]


def view(image01, name, params, norm, seed):
  """One named view of a [0, 1] float image [H, W, C] (docs/architecture.md).

  Equals view_geometry(normalize(view_pixels(image01, .., pixel_seed)), ..,
  geometry_seed) with the seeds of view_seeds(seed); the input pipeline
  runs the halves separately to normalise whole batches at once.

  Args:
    image01: float32 [H, W, C] in [0, 1] with a static shape.
    name: one of VIEWS.
    params: dict with aug_flip, aug_crop_pad, aug_shift, aug_noise_std,
      cutout_frac, randaugment_ops.
    norm: a preprocessing.norm_spec dict.
    seed: int64 [2] tensor.

  Returns:
    float32 [H, W, C], normalised.
  """
  pixel_seed, geometry_seed = view_seeds(seed)
  pixels = view_pixels(image01, name, params, pixel_seed)
  return view_geometry(preprocessing.normalize(pixels, norm), name, params,
                       geometry_seed)
