"""What an algorithm asks of the input pipeline (see docs/architecture.md)."""

import collections

# The view names; augment.view implements each.
VIEWS = ('none', 'weak', 'strong', 'realmix', 'sesemi')
# SESEMI's proxy transforms per source image (augment.proxy_transforms).
NUM_PROXY = 6
PROXY_SOURCES = (None, 'unlabeled', 'labeled')

_FIELDS = ('batch_size', 'labeled_view', 'unlabeled_ratio', 'unlabeled_batch',
           'unlabeled_views', 'proxy', 'proxy_batch', 'unlabeled_keeps_labeled',
           'unlabeled_index')


class InputNeeds(collections.namedtuple('InputNeeds', _FIELDS)):
  """Static description of one training step's input.

  Built by each algorithm's `input_needs(params)`; the pipeline turns it into
  a `tf.data.Dataset` of features dicts.
  """

  def __new__(cls, batch_size, labeled_view='weak', unlabeled_ratio=0,
              unlabeled_batch=0, unlabeled_views=(), proxy=None, proxy_batch=0,
              unlabeled_keeps_labeled=False, unlabeled_index=False):
    self = super(InputNeeds, cls).__new__(
        cls, int(batch_size), labeled_view, int(unlabeled_ratio),
        int(unlabeled_batch), tuple(unlabeled_views), proxy, int(proxy_batch),
        bool(unlabeled_keeps_labeled), bool(unlabeled_index))
    self.validate()
    return self

  @property
  def num_unlabeled(self):
    """Unlabeled images per step (0 when there is no unlabeled stream)."""
    if self.unlabeled_batch > 0:
      return self.unlabeled_batch
    return self.batch_size * self.unlabeled_ratio

  @property
  def images_per_step(self):
    """Images through the network per step: labeled, views, proxy images."""
    total = self.batch_size + self.num_unlabeled * len(self.unlabeled_views)
    if self.proxy:
      total += self.proxy_batch * NUM_PROXY
    return total

  def validate(self):
    if self.batch_size <= 0:
      raise ValueError('batch_size must be positive, got %d' % self.batch_size)
    for view in (self.labeled_view,) + self.unlabeled_views:
      if view not in VIEWS:
        raise ValueError('unknown view %r; known views: %s'
                         % (view, ', '.join(VIEWS)))
    if self.num_unlabeled and not self.unlabeled_views and self.proxy != 'unlabeled':
      raise ValueError('an unlabeled stream needs at least one view')
    if self.proxy not in PROXY_SOURCES:
      raise ValueError('proxy must be one of %s, got %r'
                       % (PROXY_SOURCES, self.proxy))
    if self.proxy and self.proxy_batch <= 0:
      raise ValueError('proxy_batch must be positive when proxy is set')
    if self.proxy == 'unlabeled' and self.num_unlabeled <= 0:
      raise ValueError("proxy='unlabeled' needs an unlabeled stream")
    if self.unlabeled_index and self.num_unlabeled <= 0:
      raise ValueError('unlabeled_index needs an unlabeled stream')
