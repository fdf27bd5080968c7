"""Training: :class:`~r3l.training.trainer.Trainer` (the loop that wires a task, a model and an algorithm: episodes,
logs, validation, checkpoints, resume), the metric logger and ``r3l demo``'s whole job (:mod:`r3l.training.demo`)."""
