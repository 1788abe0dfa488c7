from models import ofa, unify, unival  # noqa: F401  (registers the models and their architectures)
