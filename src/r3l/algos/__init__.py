"""Learning algorithms: pixel-wise PPO for policies, supervised MSE for deterministic networks, and the
optimiser helpers they share.

Every algorithm has the same small interface, which is all the trainer uses::

    algo = ALGORITHMS[name](net, cfg, env, precision, forward, compile, mode, world)
    stats = algo.learn(clean_batch, generator)   # one episode / one step; device-side diagnostics
    algo.optimizer, algo.lr_config               # for checkpoints and the learning-rate schedule
    algo.compiles_whole_update                   # whether train.compile: auto compiles all of it on CUDA

A model's registry entry (:mod:`r3l.models.spec`) names the algorithm that trains it.
"""

from r3l.algos.ppo import PPO
from r3l.algos.supervised import Supervised

ALGORITHMS = {"ppo": PPO, "supervised": Supervised}

__all__ = ["ALGORITHMS", "PPO", "Supervised"]
