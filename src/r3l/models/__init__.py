"""Networks, the registry of architectures, and trained models (the zoo, with its shipped weights)."""
