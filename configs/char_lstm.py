"""A character-level LSTM language model (Karpathy's char-rnn, in miniature).

Each example is T = 64 characters of text (by default the Python help texts in the standard
library's pydoc_data, so nothing is downloaded); at every position the model predicts the
next character: ids_BxT -> embedding -> LSTM -> dense -> logits_BxTxV, trained on the
softmax cross-entropy averaged over all B x T positions. The reported loss is in nats per
character; the baseline that ignores context (the training text's character frequencies) is
research.data.text.unigram_entropy(config.data), about 3.29 nats/char on the default corpus.

  python -m research.main --config=configs/char_lstm.py --workdir=/tmp/char_lstm

Expected: validation loss 1.54 nats/char (test 1.39; unigram baseline 3.29) after 2,000 steps,
99,015 params, 4-8 minutes on a 2-core CPU (the slower figure with the CPU shared).
"""
from research import config_lib
from research import model_configs
from research.data import text


def get_config():
  config = config_lib.base(batch_size=64, num_steps=2000, log_every=250, eval_every=500,
                           eval_batch_size=512)
  config.data = text.config(seq_len=64)  # x, y: int32 (N, 64), y the next characters
  config.model = model_configs.lstm(
      "char_lstm",
      embed_dim=32,            # E: width of each character's embedding vector
      hidden_size=128,         # H: size of h_t and of the cell c_t
      num_layers=1,            # stacked LSTM layers
      dropout=0.0,             # on the embeddings, between layers and before the head
  )
  config.loss = config_lib.loss("softmax")  # mean over B and T of -log p(next character)
  # Clipping the global norm guards against the occasional exploding BPTT gradient.
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=3e-3, schedule="cosine",
                                          clip_global_norm=1.0)
  return config
