"""A small inception network (Szegedy et al. 2015's module) on digits at 32x32.

stem conv 3x3 (32) -> max pool 3x3/2 -> inception at 16x16 (16 | 16->24 | 4->8 | pool->8 =
56 channels) -> max pool 3x3/2 -> inception at 8x8 (32 | 32->48 | 8->16 | pool->16 = 112
channels) -> global average pool -> softmax output.

  python -m research.main --config=configs/inception_digits.py --workdir=/tmp/inception_digits

Expected: about 97-98% test accuracy on the 359 test digits: 97.2% for seed 0 in 55 s on a
quiet 2-core CPU with conv_impl="auto", "patches" there (97.8% and 851 s on a heavily shared
CPU with lax.conv, which XLA:CPU runs 4-5x slower inside the scanned train step).
"""
from research import config_lib
from research import model_configs


def get_config():
  config = config_lib.base(batch_size=32, num_steps=1000, log_every=250, eval_every=500)
  config.data = config_lib.sklearn_data("digits", image_size=32)  # NHWC (32, 32, 1)
  config.model = model_configs.inception(
      stem_channels=32,        # 3x3 ReLU conv before the first block
      # One (c1, c3r, c3, c5r, c5, pool_proj) per block, each after a 3x3/2 max pool.
      blocks=((16, 16, 24, 4, 8, 8), (32, 32, 48, 8, 16, 16)),
      dropout=0.0,             # before the output layer, while training
      conv_impl="auto",     # auto: patches (im2col) on CPU, xla elsewhere | patches | xla
  )
  config.loss = config_lib.loss("softmax", l2=0.0)  # softmax cross-entropy; lambda = l2
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3, schedule="cosine")
  return config
