"""`bazel run` of the entry points resolves relative paths against the
directory bazel was run from ($BUILD_WORKING_DIRECTORY), not its runfiles.

Skipped when bazel is missing, and inside `bazel test` (no nested bazel).
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

import tensorflow.compat.v1 as tf

from tests import data_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@unittest.skipIf(shutil.which('bazel') is None, 'bazel is not installed')
@unittest.skipIf('TEST_SRCDIR' in os.environ, 'running inside bazel test')
class BazelRunTest(tf.test.TestCase):

  def bazel_run(self, cwd, target, *args):
    result = subprocess.run(
        ['bazel', 'run', '--ui_event_filters=-info', '--noshow_progress',
         target, '--'] + list(args),
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=900, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    self.assertEqual(result.returncode, 0,
                     'stdout:\n%s\nstderr:\n%s' % (result.stdout,
                                                   result.stderr[-3000:]))
    return result

  def test_prepare_and_train_with_relative_paths(self):
    parent = os.path.join(ROOT, '.test-bazel-run')
    os.makedirs(parent, exist_ok=True)
    cwd = tempfile.mkdtemp(dir=parent)
    self.addCleanup(shutil.rmtree, cwd, ignore_errors=True)
    data_fixtures.prepare_tiny_dataset(os.path.join(cwd, 'data'))

    self.bazel_run(cwd, '//launch:prepare_data', '--data_dir=data',
                   '--split=tiny.2@8-8')
    split_json = os.path.join(cwd, 'data', 'tiny', 'splits', 'tiny.2@8-8',
                              'split.json')
    self.assertTrue(os.path.exists(split_json))

    result = self.bazel_run(
        cwd, '//launch:train', '--data_dir=data', '--dataset=tiny.2@8-8',
        '--model_dir=runs/tiny', '--algorithm=supervised', '--batch_size=4',
        '--train_steps=2', '--network=resnet', '--filters=4', '--repeat=1',
        '--scales=1', '--save_checkpoints_steps=2')
    self.assertIn('step 2/2', result.stdout)
    with open(os.path.join(cwd, 'runs', 'tiny', 'params.json')) as f:
      params = json.load(f)
    self.assertEqual(params['data_dir'], os.path.join(cwd, 'data'))
    self.assertIsNotNone(
        tf.train.latest_checkpoint(os.path.join(cwd, 'runs', 'tiny')))


if __name__ == '__main__':
  tf.test.main()
