"""Hyperparameters shared by every algorithm, with their defaults.

Precedence and the params dict: docs/architecture.md.
"""

# Libml's unit of training length: an "epoch" is 65536 labeled images.
LIBML_EPOCH_IMAGES = 65536

COMMON_DEFAULTS = {
    # What to train.
    'algorithm': 'supervised',
    'network': 'resnet',
    'seed': 0,
    # Schedule: train_steps wins when > 0, else epochs * steps_per_epoch.
    'batch_size': 64,
    'train_steps': 0,
    'epochs': 0,
    # Optimizer and learning-rate schedule.
    'optimizer': 'adam',          # 'sgd' | 'adam'
    'lr': 0.002,
    'momentum': 0.9,
    'nesterov': True,
    'lr_schedule': 'constant',    # 'constant' | 'poly' | 'cosine'
    'lr_decay_power': 0.5,        # poly: lr * (1 - step/train_steps)^power
    'cosine_factor': 7.0 / 16.0,  # cosine: lr * cos(factor * pi * step/train_steps)
    'warmup_steps': 0,            # linear warm-up from 0, before the schedule
    # Regularisation.
    'weight_decay_l2': 0.0,       # L2 on every kernel, added to the loss
    'weight_decay': 0.0,          # decoupled: kernel *= 1 - weight_decay * lr
    'ema_decay': 0.0,             # EMA of trainable variables (0 = off)
    'predict_with_ema': True,     # PREDICT / export use EMA weights when EMA is on
    # Networks.
    'bn_momentum': 0.999,
    'filters': 32,
    'repeat': 4,
    'scales': 0,                  # 0 = auto: log2(image width) - 2
    'head_dropout': 0.0,          # dropout before the classifier dense layer
    'net_dropout': 0.0,           # dropout inside the network (after pooling)
    'leaky_relu': 0.1,
    # Input pipeline.
    'normalization': 'minus_one_one',  # see input_pipeline/preprocessing.py
    'aug_flip': True,
    'aug_crop_pad': 4,
    'aug_shift': 2,
    'aug_noise_std': 0.15,
    'cutout_frac': 0.5,           # cutout square side as a fraction of the width
    'randaugment_ops': 2,
    'unlabeled_keeps_labeled': False,
    'shuffle_buffer': 10000,
    'cache_images': True,
}
