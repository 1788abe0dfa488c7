from models import unify  # noqa: F401  (registers the model and its architectures)
