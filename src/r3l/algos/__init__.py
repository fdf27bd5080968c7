"""Learning algorithms: pixel-wise PPO for policies, supervised MSE for deterministic networks, and the
optimiser helpers they share.

Every algorithm has the same small interface, which is all the trainer uses::

    Algorithm.Options                           # the dataclass of its options: the config's algo section
    Algorithm.trains_policies                   # policies (PPO) or deterministic networks (supervised)
    Algorithm.check(options, batch_size)        # what the option types cannot say
    algo = ALGORITHMS[name](net, options, env, precision, forward, compile, mode, world)
    stats = algo.learn(clean_batch, generator)   # one episode / one step; device-side diagnostics
    algo.optimizer, algo.lr_config               # for checkpoints and the learning-rate schedule
    algo.compiles_whole_update                   # whether train.compile: auto compiles all of it on CUDA

:class:`Algorithm` (``r3l/algos/base.py``) keeps what they all keep and makes the optimiser; a new algorithm
subclasses it, gives ``Options`` and ``learn``, and is registered with :func:`register_algorithm`. A config chooses
it by name (``algo: {name: ..., <its options>}``); a model's registry entry (:mod:`r3l.models.spec`) names the
algorithm a config that does not choose gets.
"""

from r3l.algos.base import Algorithm
from r3l.algos.optim import LRSchedule
from r3l.algos.ppo import PPO, PPOConfig
from r3l.algos.supervised import Supervised, SupervisedConfig

ALGORITHMS = {"ppo": PPO, "supervised": Supervised}
"""Each algorithm by its name, the config's ``algo.name``."""


def register_algorithm(name: str, cls: type) -> None:
    """Add an algorithm (the interface above); a config chooses it with ``algo.name``."""
    ALGORITHMS[name] = cls


__all__ = ["ALGORITHMS", "Algorithm", "LRSchedule", "PPO", "PPOConfig", "Supervised", "SupervisedConfig",
           "register_algorithm"]
