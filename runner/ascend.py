"""The Ascend rank environment, HCCL rank tables and loss-scale settings.

Pure Python (no TensorFlow, no npu_bridge): `npu.py` turns them into
npu_bridge objects, and launch/npu_launch.py starts one process per device of
a rank table. The variables and the table format: docs/ascend.md. Every
mistake is a `cli.UsageError` naming the variable or the file and field.
"""

import collections
import json
import os

from runner import cli

RANK_TABLE_VERSION = '1.0'

# Precision modes under which CANN may run float32 operations in float16, so
# that small gradients can underflow and the loss must be scaled. None (the
# flag unset) is CANN's default, which is allow_fp32_to_fp16 for training on
# Ascend 910 (must_keep_origin_dtype on 910B); it is treated as fp16-capable.
FP16_PRECISION_MODES = ('allow_fp32_to_fp16', 'force_fp16',
                        'allow_mix_precision', None)

LOSS_SCALE_CHOICES = ('auto', 'dynamic', 'none')

RankEnv = collections.namedtuple(
    'RankEnv', ['rank_size', 'rank_id', 'device_id', 'rank_table_file'])
RankEnv.__doc__ = """One process's rank environment (docs/ascend.md).

`rank_table_file` is None when RANK_SIZE is 1 and no table is set."""

Device = collections.namedtuple('Device', ['rank_id', 'device_id', 'device_ip',
                                           'server_id'])
Device.__doc__ = 'One device of a rank table; ids are ints.'


def _int_variable(environ, name, minimum):
  """The integer value of environment variable `name`, or None when unset."""
  text = environ.get(name)
  if text is None:
    return None
  try:
    value = int(text.strip())
  except ValueError:
    raise cli.UsageError('environment variable %s=%r is not an integer'
                         % (name, text))
  if value < minimum:
    raise cli.UsageError('environment variable %s=%d must be at least %d'
                         % (name, value, minimum))
  return value


def read_rank_env(environ=None):
  """Reads and checks this process's rank environment.

  Args:
    environ: mapping of environment variables (default os.environ).

  Returns:
    A RankEnv; (1, 0, 0, None) when nothing is set.

  Raises:
    cli.UsageError: a variable that is not an integer or out of range,
      RANK_ID >= RANK_SIZE, RANK_SIZE > 1 without RANK_ID, a device id or
      RANK_TABLE_FILE, ASCEND_DEVICE_ID and DEVICE_ID that disagree, or a
      rank table that does not list RANK_SIZE devices with this rank on this
      device.
  """
  environ = os.environ if environ is None else environ
  rank_size = _int_variable(environ, 'RANK_SIZE', 1)
  rank_id = _int_variable(environ, 'RANK_ID', 0)
  ascend_device = _int_variable(environ, 'ASCEND_DEVICE_ID', 0)
  device = _int_variable(environ, 'DEVICE_ID', 0)
  if (ascend_device is not None and device is not None and
      ascend_device != device):
    raise cli.UsageError('environment variables ASCEND_DEVICE_ID=%d and '
                         'DEVICE_ID=%d name different devices'
                         % (ascend_device, device))
  device_id = ascend_device if ascend_device is not None else device
  table_file = environ.get('RANK_TABLE_FILE') or None
  if rank_size is None:
    rank_size = 1
  if rank_id is not None and rank_id >= rank_size:
    raise cli.UsageError('environment variable RANK_ID=%d must be less than '
                         'RANK_SIZE=%d' % (rank_id, rank_size))
  if rank_size > 1:
    if rank_id is None:
      raise cli.UsageError('environment variable RANK_ID is not set '
                           '(RANK_SIZE=%d); start the ranks with '
                           'launch/npu_launch.py' % rank_size)
    if device_id is None:
      raise cli.UsageError('environment variable ASCEND_DEVICE_ID (or '
                           'DEVICE_ID) is not set (RANK_SIZE=%d)' % rank_size)
    if table_file is None:
      raise cli.UsageError('environment variable RANK_TABLE_FILE is not set '
                           '(RANK_SIZE=%d needs an HCCL rank table)'
                           % rank_size)
  env = RankEnv(rank_size, rank_id or 0, device_id or 0, table_file)
  if table_file is not None:
    check_against_table(env, load_rank_table(table_file))
  return env


def check_against_table(env, devices):
  """UsageError unless `devices` (a rank table) matches `env`."""
  if len(devices) != env.rank_size:
    raise cli.UsageError('RANK_TABLE_FILE %s lists %d devices but RANK_SIZE=%d'
                         % (env.rank_table_file, len(devices), env.rank_size))
  listed = devices[env.rank_id].device_id
  if listed != env.device_id:
    raise cli.UsageError('RANK_TABLE_FILE %s puts rank %d on device %d but '
                         'ASCEND_DEVICE_ID/DEVICE_ID is %d'
                         % (env.rank_table_file, env.rank_id, listed,
                            env.device_id))


def _table_error(path, message):
  return cli.UsageError('rank table %s: %s' % (path, message))


def _table_int(path, where, entry, key):
  if key not in entry:
    raise _table_error(path, '%s has no "%s"' % (where, key))
  try:
    value = int(str(entry[key]).strip())
  except ValueError:
    raise _table_error(path, '%s "%s"=%r is not an integer'
                       % (where, key, entry[key]))
  if value < 0:
    raise _table_error(path, '%s "%s"=%d is negative' % (where, key, value))
  return value


def load_rank_table(path):
  """The devices of an HCCL rank table (version 1.0), ordered by rank.

  Returns:
    A list of Device, `list[r].rank_id == r`.

  Raises:
    cli.UsageError: the file is missing or not JSON, has another version, a
      server or device without its ids, duplicate devices on a server, rank
      ids that are not exactly 0..N-1, or a server_count that disagrees.
  """
  try:
    with open(path) as f:
      table = json.load(f)
  except OSError as e:
    raise _table_error(path, 'cannot be read (%s)' % (e.strerror or e))
  except ValueError as e:
    raise _table_error(path, 'is not valid JSON (%s)' % e)
  if not isinstance(table, dict):
    raise _table_error(path, 'is not a JSON object')
  version = str(table.get('version'))
  if version != RANK_TABLE_VERSION:
    raise _table_error(path, 'version %r is not supported (only "%s", with '
                       'server_list)' % (table.get('version'),
                                         RANK_TABLE_VERSION))
  if table.get('status', 'completed') != 'completed':
    raise _table_error(path, 'status is %r, not "completed"'
                       % table.get('status'))
  servers = table.get('server_list')
  if not isinstance(servers, list) or not servers:
    raise _table_error(path, 'has no server_list')
  if 'server_count' in table:
    count = _table_int(path, 'the table', table, 'server_count')
    if count != len(servers):
      raise _table_error(path, 'server_count is %d but server_list has %d '
                         'servers' % (count, len(servers)))
  devices = []
  for s, server in enumerate(servers):
    where = 'server_list[%d]' % s
    if not isinstance(server, dict) or 'server_id' not in server:
      raise _table_error(path, '%s has no "server_id"' % where)
    entries = server.get('device')
    if not isinstance(entries, list) or not entries:
      raise _table_error(path, '%s has no "device" list' % where)
    seen = set()
    for d, entry in enumerate(entries):
      at = '%s.device[%d]' % (where, d)
      if not isinstance(entry, dict):
        raise _table_error(path, '%s is not an object' % at)
      device_id = _table_int(path, at, entry, 'device_id')
      if device_id in seen:
        raise _table_error(path, '%s lists device_id %d twice'
                           % (where, device_id))
      seen.add(device_id)
      devices.append(Device(_table_int(path, at, entry, 'rank_id'), device_id,
                            entry.get('device_ip'), str(server['server_id'])))
  ranks = sorted(d.rank_id for d in devices)
  if ranks != list(range(len(devices))):
    raise _table_error(path, 'rank_id values %s are not 0..%d, each once'
                       % (ranks, len(devices) - 1))
  return sorted(devices, key=lambda d: d.rank_id)


def valid_loss_scale(value):
  """True for the values --loss_scale accepts: auto, dynamic, none, or >= 1."""
  if value in LOSS_SCALE_CHOICES:
    return True
  try:
    return float(value) >= 1
  except (TypeError, ValueError):
    return False


def loss_scale_settings(opts):
  """The loss-scale manager to build, as plain data, or None for no scaling.

  `opts['loss_scale']`: `auto` (default) = `dynamic` when the precision mode
  lets float16 in (FP16_PRECISION_MODES), else `none`; `dynamic` =
  ExponentialUpdateLossScaleManager with `init_loss_scale`,
  `incr_every_n_steps`, `decr_every_n_nan_or_inf`, `incr_ratio`,
  `decr_ratio` (defaults 2**32, 1000, 2, 2, 0.5: the ModelZoo ports'
  values); a number = FixedLossScaleManager(loss_scale=number) (steps with
  an overflow are still skipped).

  Returns:
    None, or (manager class name in npu_loss_scale_manager, kwargs dict).

  Raises:
    cli.UsageError: a --loss_scale that is none of the above.
  """
  choice = str(opts.get('loss_scale') or 'auto')
  if not valid_loss_scale(choice):
    raise cli.UsageError('--loss_scale must be auto, dynamic, none or a number '
                         '>= 1, got %r' % choice)
  if choice == 'auto':
    fp16 = opts.get('precision_mode') in FP16_PRECISION_MODES
    choice = 'dynamic' if fp16 else 'none'
  if choice == 'none':
    return None
  if choice == 'dynamic':
    return ('ExponentialUpdateLossScaleManager', dict(
        init_loss_scale=float(_opt(opts, 'init_loss_scale', 2.**32)),
        incr_every_n_steps=int(_opt(opts, 'incr_every_n_steps', 1000)),
        decr_every_n_nan_or_inf=int(_opt(opts, 'decr_every_n_nan_or_inf', 2)),
        incr_ratio=float(_opt(opts, 'incr_ratio', 2.)),
        decr_ratio=float(_opt(opts, 'decr_ratio', 0.5))))
  return ('FixedLossScaleManager', dict(loss_scale=float(choice)))


def _opt(opts, key, default):
  value = opts.get(key)
  return default if value is None else value
