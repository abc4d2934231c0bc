"""AlexNet (Krizhevsky et al. 2012) at its own scale: ImageNet, 224x224 crops, 1000 classes.

The paper's model (conv 96-256-384-384-256 with 11x11/4 conv1, the two-GPU groups, LRN,
overlapping 3x3/2 pools, fc 4096-4096 with dropout 0.5; research/models/alexnet.py) and its
recipe: images rescaled to 256 on the shorter side, random 224x224 crops and left-right flips,
the PCA colour jitter (alpha ~ N(0, 0.1)); SGD, batch 128, momentum 0.9, weight decay 5e-4
(as the loss's L2 term, coupled as in the paper), eta = 0.01 divided by 10 every 30 epochs,
90 epochs. (224x224 with conv1 padding SAME gives the paper's 27/13/6 maps after the pools.)

The data streams from records files (config.data.pipeline="streaming"); convert ImageNet
once with launch/make_records.py (README, "Data beyond memory"). On a TPU VM slice, with the
records in a bucket (--streaming installs the streaming extra and gcsfs on every host; the
config and workdir are tpu_vm.sh's own flags, the overrides follow --):

  launch/tpu_vm.sh --name=my-v4-32 --zone=us-central2-b --streaming \\
      --config=configs/alexnet_imagenet.py --workdir=gs://BUCKET/runs/alexnet \\
      -- --config.data.data_dir=gs://BUCKET/imagenet_records --config.compute_dtype=bfloat16

Expected (the paper): about 40.7% top-1 error on the validation set after 90 epochs (its
single-model, single-crop figure); not reproduced here: this CPU runs it only as
get_config("cpu") on a small synthetic tree (tests/streaming_test.py). ILSVRC's test labels
are not public, so the validation set serves as valid and test split.

  python -m research.main --config=configs/alexnet_imagenet.py:cpu \\
      --config.data.data_dir=/tmp/tiny_records --workdir=/tmp/alexnet_tiny
"""
from research import config_lib
from research.data import records

TRAIN_IMAGES = 1_281_167      # ILSVRC-2012 train split
BATCH_SIZE = 128
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH_SIZE


def get_config(arg: str | None = None):
  config = config_lib.base(batch_size=BATCH_SIZE, num_steps=90 * STEPS_PER_EPOCH,
                           log_every=500, eval_every=5 * STEPS_PER_EPOCH,
                           checkpoint_every=5000, eval_batch_size=500)
  config.data = records.config(
      data_dir="",               # the records directory: pass --config.data.data_dir
      pipeline="streaming",
      train_split="train",
      valid_split="val",         # ILSVRC-2012 val (50,000 images), also the test split
      test_split="val",
      image_size=224,            # the model's input: 224x224 crops
      resize=256,                # shorter side first scaled to 256 (the paper)
      random_crop=True, flip=True,
      pca_jitter=0.1,            # the paper's alpha ~ N(0, 0.1) on the RGB principal axes
      num_workers=16,            # grain decode processes per host (decode is ~1-3 ms/image)
      prefetch=2,
  )
  config.model = dict(
      name="alexnet",
      conv_channels=(96, 256, 384, 384, 256),  # conv1..conv5 maps
      kernel_sizes=(11, 5, 3, 3, 3),           # square kernel side of conv1..conv5
      groups=(1, 2, 1, 2, 2),                  # the paper's two-GPU split
      conv1_stride=4,
      conv1_padding="SAME",                    # 224 -> 56 -> 27 after the first pool
      width=1.0,                               # multiplies conv_channels
      fc_sizes=(4096, 4096),
      lrn=True,                                # local response norm after conv1 and conv2
      dropout=0.5,                             # on fc6 and fc7 while training
      pool_window=3,                           # overlapping 3x3/2 max pools
      pool_stride=2,
      conv_impl="auto",     # auto: patches (im2col) on CPU, xla elsewhere | patches | xla
  )
  # The paper's weight decay 5e-4 on the gradient is (lambda/2m) sum w^2 with lambda = 5e-4 m.
  config.loss = config_lib.loss("softmax", l2=5e-4 * TRAIN_IMAGES)
  config.optimizer = config_lib.optimizer(
      name="momentum", learning_rate=0.01, momentum=0.9, schedule="step",
      decay_every=30 * STEPS_PER_EPOCH, decay_rate=0.1)
  if arg == "cpu":
    # A few steps on a small tree (tests/streaming_test.py): a quarter of the width, 64x64
    # crops, fc 256; the same pipeline and augmentation.
    config.update(dict(batch_size=8, num_steps=6, log_every=2, eval_every=6,
                       checkpoint_every=2, eval_batch_size=16))
    config.data.update(dict(image_size=64, resize=72, num_workers=0))
    config.model.update(dict(width=0.25, fc_sizes=(256, 256)))
    config.loss.l2 = 5e-4 * 100
    config.optimizer.update(dict(decay_every=1000))
  elif arg is not None:
    raise ValueError(f"unknown variant {arg!r} of configs/alexnet_imagenet.py; use :cpu or none")
  return config
