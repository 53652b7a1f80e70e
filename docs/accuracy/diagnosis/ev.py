import sys, glob
import tensorflow as tf
from tensorflow.core.util import event_pb2
for f in sorted(glob.glob(sys.argv[1] + '/events.out.tfevents.*')):
  out = {}
  for rec in tf.data.TFRecordDataset(f):
    e = event_pb2.Event.FromString(rec.numpy())
    for v in e.summary.value:
      if v.tag in sys.argv[2:]:
        val = v.simple_value if v.HasField('simple_value') else tf.make_ndarray(v.tensor)
        out.setdefault(v.tag, []).append((e.step, float(val)))
  for k, vals in out.items():
    # average over blocks of 300 steps
    import collections
    b = collections.OrderedDict()
    for s, x in vals: b.setdefault((s - 1) // 300, []).append(x)
    print(k, ' '.join('%d:%.3f' % ((i + 1) * 300, sum(v) / len(v)) for i, v in b.items()))
