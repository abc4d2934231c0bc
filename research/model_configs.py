"""Every model family's default config.model group and its numeric fields' ranges, JAX-free.

Loading a config file runs these (configs/*.py build config.model from them), and nothing here
imports JAX, so a mistake in a config or an override is reported before JAX starts. Each family
module (research/models/<family>.py) re-exports its own as `config` and `RANGES`, beside its
builder; `default(name)` is the group of a registered model name (the names of `DEFAULTS`
are the registry's, which tests/house_test.py checks).
"""
import ml_collections

from research import config_lib
from research import errors

_DROPOUT = config_lib.Range(False, 0.0, 1.0, high_open=True)


def mlp(name: str = "mlp", **overrides) -> ml_collections.ConfigDict:
  """The default config.model group (configs override it): the lecture's network."""
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.hidden_sizes = (64,)     # widths of the hidden layers
  cfg.activation = "sigmoid"   # sigmoid | tanh | relu
  cfg.dropout = 0.0            # probability of zeroing each hidden unit in training
  cfg.update(overrides)
  return cfg


def lenet(name: str = "lenet5", **overrides) -> ml_collections.ConfigDict:
  """The default config.model group (configs override it)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.variant = "faithful"     # faithful | classic | modern (see the module doc)
  cfg.conv_impl = "auto"       # auto: patches (im2col) on CPU, xla elsewhere | patches | xla
  cfg.update(overrides)
  return cfg


def alexnet(name: str = "alexnet", **overrides) -> ml_collections.ConfigDict:
  """The default config.model group (configs override it): configs/alexnet_small.py's net."""
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.conv_channels = (64, 192, 384, 256, 256)  # conv1..conv5 maps, before the width multiplier
  cfg.kernel_sizes = (5, 5, 3, 3, 3)  # square kernel side of conv1..conv5
  cfg.groups = (1, 1, 1, 1, 1)  # (1, 2, 1, 2, 2) = the paper's two-GPU split
  cfg.conv1_stride = 1         # 4 in the paper (for 227x227 inputs)
  cfg.conv1_padding = "SAME"   # SAME | VALID (the paper: VALID on 227x227)
  cfg.width = 1.0              # multiplies conv_channels (e.g. 0.5 = half)
  cfg.fc_sizes = (1024, 1024)  # hidden fc layers (the paper: 4096, 4096)
  cfg.lrn = True               # local response norm after conv1 and conv2
  cfg.dropout = 0.5            # on the hidden fc outputs while training
  cfg.pool_window = 3          # max pools 3x3/2 (the paper's, overlapping);
  cfg.pool_stride = 2          #   2 and 2 for the common 2x2/2
  cfg.conv_impl = "auto"       # auto: patches (im2col) on CPU, xla elsewhere | patches | xla
  cfg.update(overrides)
  return cfg


def cnn1d(name: str = "cnn1d", **overrides) -> ml_collections.ConfigDict:
  """The default config.model group (configs override it): configs/cnn_mnist1d.py's net."""
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.channels = (64, 64, 64)  # C_l: output channels of each conv layer
  cfg.kernel_sizes = (5, 3, 3)  # k_l: kernel length of each conv layer
  cfg.strides = (1, 2, 2)      # s_l: 40 -> 40 -> 20 -> 10 steps
  cfg.padding = "SAME"         # SAME: T_l = ceil(T_{l-1} / s_l) | VALID: no zero padding
  cfg.conv_impl = "auto"       # auto: patches (im2col) on CPU, xla elsewhere | patches | xla
  cfg.update(overrides)
  return cfg


def inception(name: str = "inception", **overrides) -> ml_collections.ConfigDict:
  """The default config.model group (configs override it)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.stem_channels = 32       # 3x3 ReLU conv before the first block
  # One (c1, c3r, c3, c5r, c5, pool_proj) per block, each after a 3x3/2 max pool.
  cfg.blocks = ((16, 16, 24, 4, 8, 8), (32, 32, 48, 8, 16, 16))
  cfg.dropout = 0.0            # before the output layer, while training
  cfg.conv_impl = "auto"       # auto: patches (im2col) on CPU, xla elsewhere | patches | xla
  cfg.update(overrides)
  return cfg


def local_cnn(name: str = "local_cnn", **overrides) -> ml_collections.ConfigDict:
  """The default config.model group (configs override it)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.shared = True            # True: convolution (weights shared) | False: locally connected
  cfg.channels = (16, 32)      # maps of each layer
  cfg.kernel_sizes = (3, 3)    # k x k receptive fields
  cfg.strides = (1, 2)         # 8x8 -> 8x8 -> 4x4 positions
  cfg.padding = "SAME"         # SAME | VALID
  cfg.conv_impl = "auto"       # shared layers: patches on a CPU, XLA's convolution elsewhere
  cfg.update(overrides)
  return cfg


def lstm(name: str = "lstm_classifier", **overrides) -> ml_collections.ConfigDict:
  """The default config.model group of "lstm_classifier" or "char_lstm" (configs override
  it)."""
  errors.check_choice("model.name", name, ("lstm_classifier", "char_lstm"))
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  if name == "char_lstm":
    cfg.embed_dim = 32         # E: width of each character's embedding vector
  cfg.hidden_size = 64 if name == "lstm_classifier" else 128  # H: size of h_t and of c_t
  cfg.num_layers = 1           # stacked LSTM layers
  if name == "lstm_classifier":
    cfg.bidirectional = False  # True: also read the sequence backwards, concatenating h
    cfg.readout = "last"       # last: h_T | mean: mean_t h_t | all: every h_t concatenated
  cfg.dropout = 0.0            # between layers and before the head (never on h_{t-1} -> h_t)
  cfg.update(overrides)
  return cfg


def gru(name: str = "gru_classifier", **overrides) -> ml_collections.ConfigDict:
  """The default config.model group (configs override it)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.hidden_size = 64         # H: size of h_t
  cfg.num_layers = 1           # stacked GRU layers
  cfg.readout = "mean"         # last: h_T | mean: mean_t h_t | all: every h_t concatenated
  cfg.dropout = 0.0            # between layers and before the head (never on h_{t-1} -> h_t)
  cfg.update(overrides)
  return cfg


def attention(name: str = "transformer_classifier", **overrides) -> ml_collections.ConfigDict:
  """The default config.model group of "transformer_classifier" or "char_transformer"
  (configs override it)."""
  errors.check_choice("model.name", name, ("transformer_classifier", "char_transformer"))
  classifier = name == "transformer_classifier"
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  if classifier:
    cfg.patch_size = 4         # consecutive steps per token
  cfg.d_model = 64             # D: width of the residual stream (and of the embeddings)
  cfg.num_heads = 4            # heads of d_k = D / num_heads each
  cfg.num_layers = 2           # pre-LN blocks (causal self-attention in char_transformer)
  cfg.mlp_dim = 128 if classifier else 256  # hidden width of each block's MLP
  cfg.activation = "gelu"      # gelu | relu, inside the MLP
  cfg.pos_embedding = "learned"  # learned: a trained T x D table | sinusoidal: fixed sin/cos
  cfg.dropout = 0.1 if classifier else 0.0  # on the embeddings and each residual branch
  cfg.update(overrides)
  return cfg


def bag_of_embeddings(name: str = "bag_of_embeddings", **overrides) -> ml_collections.ConfigDict:
  """The default config.model group (configs override it)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.vocab_size = 0           # set by the runner from the corpus's vocabulary
  cfg.embed_dim = 50           # D of the word vectors
  cfg.freeze_embeddings = False  # True: train only the dense layer on a given table
  cfg.update(overrides)
  return cfg


RANGES: dict[str, dict[str, config_lib.Range]] = {
    "mlp": {"dropout": _DROPOUT},
    "lenet": {},
    "alexnet": {"conv1_stride": config_lib.Range(True, 1), "pool_window": config_lib.Range(True, 1),
              "pool_stride": config_lib.Range(True, 1),
              "width": config_lib.Range(False, 0.0, low_open=True),
              "dropout": _DROPOUT},
    "cnn1d": {},
    "inception": {"stem_channels": config_lib.Range(True, 1),
              "dropout": _DROPOUT},
    "local_cnn": {},
    "lstm": {"embed_dim": config_lib.Range(True, 1), "hidden_size": config_lib.Range(True, 1),
              "num_layers": config_lib.Range(True, 1),
              "dropout": _DROPOUT},
    "gru": {"hidden_size": config_lib.Range(True, 1), "num_layers": config_lib.Range(True, 1),
              "dropout": _DROPOUT},
    "attention": {"patch_size": config_lib.Range(True, 1), "d_model": config_lib.Range(True, 1),
              "num_heads": config_lib.Range(True, 1), "num_layers": config_lib.Range(True, 1),
              "mlp_dim": config_lib.Range(True, 1),
              "dropout": _DROPOUT},
    "bag_of_embeddings": {"vocab_size": config_lib.Range(True, 0),  # 0: not yet set (see config())
              "embed_dim": config_lib.Range(True, 1)},
}

# Registered model name -> the function that builds its default group (called with the name).
DEFAULTS = {
    "mlp": mlp, "lenet5": lenet, "alexnet": alexnet, "cnn1d": cnn1d, "inception": inception,
    "local_cnn": local_cnn, "lstm_classifier": lstm, "char_lstm": lstm, "gru_classifier": gru,
    "transformer_classifier": attention, "char_transformer": attention,
    "bag_of_embeddings": bag_of_embeddings,
}


def default(name: str) -> ml_collections.ConfigDict:
  """The default config.model group of model `name`; ConfigError naming the choices if none."""
  if name not in DEFAULTS:
    raise errors.ConfigError(
        f"config.model.name={name!r} is not a registered model; choose one of: "
        + ", ".join(repr(n) for n in sorted(DEFAULTS)))
  return DEFAULTS[name](name)


def ranges(name: str) -> dict[str, config_lib.Range]:
  """{field: Range} of model `name`'s numeric fields."""
  return dict(RANGES[DEFAULTS[name].__name__])


def resolve(model_config) -> ml_collections.ConfigDict:
  """The group as given when it has every field of its family's defaults; otherwise (a group
  written without some of them, or a name changed in code: research.main itself replaces the
  group when --config.model.name switches the family) the family's defaults, keeping the
  group's values of the fields both have."""
  defaults = default(model_config.name)
  if all(field in model_config for field in defaults):
    return model_config
  merged = defaults.to_dict()
  merged.update({k: v for k, v in model_config.items() if k in merged})
  return ml_collections.ConfigDict(merged)


for _name in DEFAULTS:  # config_lib.check_ranges(config) checks the chosen family's fields too
  config_lib.add_family_ranges("model", _name, ranges(_name))
