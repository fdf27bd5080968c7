"""Learning algorithms: pixel-wise PPO for policies, supervised MSE for deterministic networks, and the
optimiser helpers they share."""
