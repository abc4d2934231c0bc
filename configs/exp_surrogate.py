"""Surrogate loss vs the real evaluation function (research/experiments/surrogate.py).

Trains on a differentiable surrogate and logs it beside the metric we actually care about, at
every eval on the validation split, for 5 seeds (each redraws the data split, the init and the
batch order); under the experiment harness, the checkpoint rules best_loss (the baseline),
best_metric and last are compared on test with paired 95% CIs.

  python -m research.main --config=configs/exp_surrogate.py:macro_f1 --workdir=/tmp/sur_f1
  python -m research.main --config=configs/exp_surrogate.py:binary_f1 --workdir=/tmp/sur_bin
  python -m research.main --config=configs/exp_surrogate.py:binary_f1_cancer --workdir=/tmp/sur_bc
  python -m research.main --config=configs/exp_surrogate.py:mae --workdir=/tmp/sur_mae
  python -m research.main --config=configs/exp_surrogate.py:bleu --workdir=/tmp/sur_bleu

Variants:
  macro_f1          digits, 10 classes, softmax cross-entropy -> macro F1
  binary_f1         digits "is it a 9?" (about 10% positives), one sigmoid unit -> F1 of the 9s
  binary_f1_cancer  breast cancer, malignant = positive, 25% of the malignant tumours kept
  mae               diabetes regression, squared error -> mean absolute error
  bleu              char LSTM on the pydoc text, cross-entropy -> BLEU of greedy continuations
                    (needs `pip install sacrebleu`)

docs/experiments.md section 3 holds the measured tables (every variant, under the harness)
and what they show.
"""
from research import config_lib
from research import model_configs
from research.data import text as text_data

VARIANTS = ("macro_f1", "binary_f1", "binary_f1_cancer", "mae", "bleu")


def get_config(arg: str = "macro_f1"):
  """arg: one of VARIANTS."""
  if arg not in VARIANTS:
    raise ValueError(f"configs/exp_surrogate.py:{arg}: unknown variant; choose one of "
                     + ", ".join(VARIANTS))
  config = config_lib.base(trainer="surrogate", batch_size=32, num_steps=4000, eval_every=100,
                           log_every=100)
  config.experiment = dict(
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      task=arg.replace("_cancer", ""),  # macro_f1 | binary_f1 | mae | bleu
      # The methods are checkpoint rules over the same runs (one per seed).
      methods=("best_loss", "best_metric", "last"),
      baseline="best_loss",    # early stopping on the surrogate: the usual rule
      seeds=5,                 # config.seed, +1, ...: the data split (data.split_seed + seed),
                               # the init and the batch order
      positive_class=9,        # binary_f1: this class is 1, every other class is 0
      positive_keep=1.0,       # binary_f1: fraction of the positives kept in each split (rarer)
      prompt_len=32,           # bleu: characters of each valid window given as the prompt
      num_prompts=128,         # bleu: valid windows continued at each eval
      temperature=0.0,         # bleu: 0 = greedy continuation, > 0 = sample at this temperature
      bleu_tokenize="char",    # bleu: the BLEU tracked: char = character n-grams | 13a = word
                               # tokens (both are logged; see the runner's bleu())
  )
  # A wide MLP without a penalty, trained long: the valid loss turns up (over-confident
  # mistakes) while the counting metrics keep or improve their value.
  config.model = model_configs.mlp(
      hidden_sizes=(256,),     # widths of the hidden layers
      activation="sigmoid",    # sigmoid | tanh | relu
      dropout=0.0,             # probability of zeroing each hidden unit in training
  )
  config.loss = config_lib.loss("softmax")
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  if arg == "macro_f1":
    config.data = config_lib.sklearn_data("digits")
  elif arg == "binary_f1":
    config.data = config_lib.sklearn_data("digits")
    config.loss = config_lib.loss("sigmoid")  # one unit: sigma = Pr(9 | x)
  elif arg == "binary_f1_cancer":
    # Larger valid/test splits: with a quarter of the malignant tumours kept, the default
    # 10% valid split would hold about 5 positives.
    config.data = config_lib.sklearn_data("breast_cancer", valid_fraction=0.25,
                                          test_fraction=0.25)
    config.loss = config_lib.loss("sigmoid")
    config.experiment.positive_class = 0   # malignant
    config.experiment.positive_keep = 0.25
    config.num_steps, config.eval_every = 3000, 100
  elif arg == "mae":
    # sklearn's diabetes (442 patients); the runner loads it (it is a regression set).
    config.data = config_lib.sklearn_data("diabetes")
    config.model.hidden_sizes = (64,)
    config.loss = config_lib.loss("softmax")  # unused: mae trains on squared error
    config.num_steps, config.eval_every = 3000, 100
  else:
    config.data = text_data.config(seq_len=64)  # the last 32 characters are the continuation
    config.model = dict(
        name="char_lstm",
        embed_dim=32,          # E: character embedding size
        hidden_size=64,        # H: LSTM state size
        num_layers=1,          # stacked LSTM layers
        dropout=0.0,           # between layers and before the head
    )
    config.optimizer = config_lib.optimizer(name="adam", learning_rate=3e-3, schedule="cosine",
                                            clip_global_norm=1.0)
    config.batch_size, config.num_steps, config.eval_every = 32, 2000, 200
  return config
