"""Learning algorithms: pixel-wise PPO for policies, supervised MSE for deterministic networks, and the
optimiser helpers they share.

Every algorithm has the same small interface, which is all the trainer uses::

    Algorithm.Options                           # the dataclass of its options: the config section of its name
    Algorithm.check(options, batch_size)        # what the option types cannot say
    algo = ALGORITHMS[name](net, options, env, precision, forward, compile, mode, world)
    stats = algo.learn(clean_batch, generator)   # one episode / one step; device-side diagnostics
    algo.optimizer, algo.lr_config               # for checkpoints and the learning-rate schedule
    algo.compiles_whole_update                   # whether train.compile: auto compiles all of it on CUDA

:class:`Algorithm` (``r3l/algos/base.py``) keeps what they all keep and makes the optimiser; a new algorithm
subclasses it, gives ``Options`` and ``learn``, and is registered with :func:`register_algorithm`. A model's
registry entry (:mod:`r3l.models.spec`) names the algorithm that trains it.
"""

from r3l.algos.base import Algorithm
from r3l.algos.optim import LRSchedule
from r3l.algos.ppo import PPO, PPOConfig
from r3l.algos.supervised import Supervised, SupervisedConfig

ALGORITHMS = {"ppo": PPO, "supervised": Supervised}
"""Each algorithm by the name of its config section."""


def register_algorithm(name: str, cls: type) -> None:
    """Add an algorithm (the interface above); its options become the config section ``name``."""
    ALGORITHMS[name] = cls


__all__ = ["ALGORITHMS", "Algorithm", "LRSchedule", "PPO", "PPOConfig", "Supervised", "SupervisedConfig",
           "register_algorithm"]
