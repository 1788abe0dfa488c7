from models import ofa, unify  # noqa: F401  (registers the models and their architectures)
