"""A character-level causal transformer language model (a tiny GPT).

Each example is T = 64 characters of text (by default the Python help texts in the standard
library's pydoc_data, so nothing is downloaded); the causal mask lets position t attend to
positions <= t only, so logits[:, t] predict character t+1 from characters 0..t, and all T
predictions train in parallel. The reported loss is in nats per character; the baseline that
ignores context (the training text's character frequencies) is
research.data.text.unigram_entropy(config.data), about 3.29 nats/char on the default corpus.

  python -m research.main --config=configs/char_transformer.py --workdir=/tmp/char_tf

Expected: validation loss 1.50 nats/char (test 1.34; unigram baseline 3.29) after 2,000 steps,
117,479 params, about 10 minutes on a shared 2-core CPU (2 cores busy with other jobs).
"""
from research import config_lib
from research import model_configs
from research.data import text


def get_config():
  config = config_lib.base(batch_size=64, num_steps=2000, log_every=250, eval_every=500,
                           eval_batch_size=512)
  config.data = text.config(seq_len=64)  # x, y: int32 (N, 64), y the next characters
  config.model = model_configs.attention(
      "char_transformer",
      d_model=64,              # D: width of the residual stream and of the embeddings
      num_heads=4,             # heads of d_k = D / num_heads each
      num_layers=2,            # pre-LN blocks, each with causal self-attention
      mlp_dim=256,             # hidden width of each block's MLP
      activation="gelu",       # gelu | relu, inside the MLP
      pos_embedding="learned",  # learned: a trained T x D table | sinusoidal: fixed sin/cos
      dropout=0.0,             # on the embeddings and on each residual branch
  )
  config.loss = config_lib.loss("softmax")  # mean over B and T of -log p(next character)
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=2e-3, schedule="cosine",
                                          warmup_steps=100, clip_global_norm=1.0)
  return config
