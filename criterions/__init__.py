from criterions import constrained_cross_entropy, retrieval_cross_entropy, self_critical  # noqa: F401  (registers)
