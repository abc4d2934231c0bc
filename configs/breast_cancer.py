"""Breast cancer (binary): the natural case for ONE sigmoid output unit + cross-entropy.

30 standardised features -> 16 sigmoid units -> 1 sigmoid output sigma = Pr(benign | x),
E = -(1/m) sum [y log sigma + (1-y) log(1-sigma)] + (lambda/2m) sum w^2.

  python -m research.main --config=configs/breast_cancer.py --workdir=/tmp/cancer

Expected: about 98-99% test accuracy (114 test tumours; 98.2-99.1% over seeds 0-3) in a few seconds.
"""
from research import config_lib
from research import model_configs


def get_config():
  config = config_lib.base(batch_size=32, num_steps=1500, log_every=250, eval_every=500)
  config.data = config_lib.sklearn_data("breast_cancer")
  config.model = model_configs.mlp(
      hidden_sizes=(16,),      # widths of the sigmoid hidden layers
      activation="sigmoid",    # sigmoid | tanh | relu
      dropout=0.0,             # probability of zeroing each hidden unit in training
  )
  # 2 classes + sigmoid output -> a single unit; lambda = l2 in (lambda/2m) sum w^2.
  config.loss = config_lib.loss("sigmoid", l2=1.0)
  config.optimizer = config_lib.optimizer(name="momentum", learning_rate=0.05, momentum=0.9)
  return config
