"""Models chosen by name. Each is a pair of pure functions over a pytree of params:

  init(key) -> params
  apply(params, x_BxI..., *, train=False, rng=None) -> logits_BxK

`build(model_config, input_shape, num_outputs)` returns that pair as a `Model`. The registry
lives in research/models/core.py; every family module registers its builders there when this
package imports it below.
"""
from research.models.core import Model, build, conv_impl, names, register  # noqa: F401

# Model families register themselves on import.
from research.models import alexnet  # noqa: E402,F401
from research.models import attention  # noqa: E402,F401
from research.models import bag_of_embeddings  # noqa: E402,F401
from research.models import cnn1d  # noqa: E402,F401
from research.models import inception  # noqa: E402,F401
from research.models import lenet  # noqa: E402,F401
from research.models import local_cnn  # noqa: E402,F401
from research.models import lstm  # noqa: E402,F401
from research.models import mlp  # noqa: E402,F401
