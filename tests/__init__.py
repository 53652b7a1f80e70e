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
