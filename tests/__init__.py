"""Tests of the product; graph mode on both runtimes (input_pipeline/runtime.py).

The few tests that can only hold on one runtime skip on the other with one of
the reasons below (`unittest.skipIf(runtime.TF2, NPU_STAND_IN_TF1_ONLY)`).
"""

from input_pipeline import runtime

runtime.graph_mode()

NPU_STAND_IN_TF1_ONLY = (
    'npu_bridge runs on TensorFlow 1.15 only; its stand-in '
    '(tests/fake_npu_bridge) keeps the loss scale in reference variables, '
    'which TF 2\'s control flow v2 cannot assign inside tf.cond')

RESEARCH_YARDSTICK_TF1_ONLY = (
    'benchmarks/against_research.py rescales the research figures by a '
    'yardstick that must be the stock TensorFlow 1.15.0 wheel (the research '
    'code\'s runtime); on TF 2 it measures the tf2 flavour with '
    '--flavors=tf2=.venv-tf2/bin/python instead')
