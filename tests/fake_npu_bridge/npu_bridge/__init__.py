"""Recording stand-in for CANN's npu_bridge (tests only; see README.md)."""

# (class name, kwargs) of every constructor call, in order.
RECORD = []


def record(name, kwargs):
  RECORD.append((name, dict(kwargs)))
