"""A GRU on MNIST-1D (Greydanus, 2020): 40-step 1-D signals, one value per step, 10 classes.

The paper's GRU reaches 91% test accuracy (its CNN 94%, MLP 68%, logistic regression 32%).
The same recipe as configs/lstm_mnist1d.py: one layer of H = 64, h_t averaged over t.

  python -m research.main --config=configs/gru_mnist1d.py --workdir=/tmp/gru_mnist1d

Expected: 96.1 / 95.3 / 96.1% test accuracy for seeds 0-2 (13,322 params), above the paper's
91% GRU and level with the LSTM (2026-12-05, on a 2-core CPU shared with other jobs: 197-456 s
per run, not a speed figure).
"""
from research import config_lib
from research import model_configs
from research.data import mnist1d_data


def get_config():
  config = config_lib.base(batch_size=100, num_steps=3000, log_every=500, eval_every=500)
  config.data = mnist1d_data.config(shape="sequence")  # x_Nx40x1: T = 40 steps of F = 1
  config.model = model_configs.gru(
      hidden_size=64,          # H: size of h_t
      readout="mean",          # last: h_T | mean: mean_t h_t | all: every h_t concatenated
  )
  config.loss = config_lib.loss("softmax")  # softmax cross-entropy over the 10 classes
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=3e-3, schedule="cosine")
  return config
