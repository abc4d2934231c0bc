"""The lecture's network on scikit-learn's bundled digits (the default experiment).

64 standardised pixels -> 64 sigmoid units -> 10 sigmoid outputs, trained on the lecture's
cross-entropy plus the (lambda/2m) sum w^2 penalty with SGD + momentum.

  python -m research.main --config=configs/default.py --workdir=/tmp/digits

Expected: about 98% test accuracy (97.5-98.6% over seeds 0-3) in a few seconds on a laptop CPU.
"""
from research import config_lib
from research import model_configs


def get_config():
  config = config_lib.base(batch_size=32, num_steps=3000, log_every=250, eval_every=500)
  config.data = config_lib.sklearn_data("digits")
  config.model = model_configs.mlp(
      hidden_sizes=(64,),      # widths of the sigmoid hidden layers
      activation="sigmoid",    # sigmoid | tanh | relu
      dropout=0.0,             # probability of zeroing each hidden unit in training
  )
  # The lecture's E: K sigmoid units' cross-entropy + (lambda/2m) sum w^2, lambda = l2.
  config.loss = config_lib.loss("sigmoid", l2=0.1)
  config.optimizer = config_lib.optimizer(name="momentum", learning_rate=0.1, momentum=0.9)
  return config
