from criterions import constrained_cross_entropy  # noqa: F401  (registers the criterion)
