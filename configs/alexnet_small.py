"""A scaled-down AlexNet (Krizhevsky et al. 2012) for 32x32 images, on digits at 32x32.

The common small-image AlexNet: conv 64-192-384-256-256 (5x5, 5x5, 3x3, 3x3, 3x3, conv1
stride 1), ReLU, LRN after conv1 and conv2, overlapping 3x3/2 max pools (32 -> 15 -> 7 -> 3),
fc 1024-1024 with dropout 0.5, softmax output. The full ImageNet model is reachable by
config: conv_channels=(96, 256, 384, 384, 256), kernel_sizes=(11, 5, 3, 3, 3),
groups=(1, 2, 1, 2, 2), conv1_stride=4, conv1_padding="VALID", fc_sizes=(4096, 4096) on
227x227x3 inputs (60,965,224 parameters for 1000 classes).

  python -m research.main --config=configs/alexnet_small.py --workdir=/tmp/alexnet_small

Expected: 99.2% test accuracy (seed 0, 359 test digits) in 130 s wall on a quiet 2-core CPU
with conv_impl="auto", "patches" there (about 3.5 steps of 32 images a second, ~17 GFLOP each;
with lax.conv inside the scanned step a step took about 4 CPU-seconds).
--config.model.width=0.25 (16-48-96-64-64 maps, about 16x fewer conv FLOPs) also reaches 99.2%,
in 27 s.
"""
from research import config_lib
from research import model_configs


def get_config():
  config = config_lib.base(batch_size=32, num_steps=400, log_every=100, eval_every=200)
  config.data = config_lib.sklearn_data("digits", image_size=32)  # NHWC (32, 32, 1)
  config.model = model_configs.alexnet(
      conv_channels=(64, 192, 384, 256, 256),  # conv1..conv5 maps, before the width multiplier
      kernel_sizes=(5, 5, 3, 3, 3),            # square kernel side of conv1..conv5
      groups=(1, 1, 1, 1, 1),                  # (1, 2, 1, 2, 2) = the paper's two-GPU split
      conv1_stride=1,                          # 4 in the paper (for 227x227 inputs)
      conv1_padding="SAME",                    # SAME | VALID (the paper: VALID on 227x227)
      width=1.0,                               # multiplies conv_channels (e.g. 0.5 = half)
      fc_sizes=(1024, 1024),                   # hidden fc layers (the paper: 4096, 4096)
      lrn=True,                                # local response norm after conv1 and conv2
      dropout=0.5,                             # on the hidden fc outputs while training
      pool_window=3,                           # max pools 3x3/2 (the paper's, overlapping);
      pool_stride=2,                           #   2 and 2 for the common 2x2/2
      conv_impl="auto",     # auto: patches (im2col) on CPU, xla elsewhere | patches | xla
  )
  config.loss = config_lib.loss("softmax", l2=0.0)  # softmax cross-entropy; lambda = l2
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=5e-4, schedule="cosine")
  return config
