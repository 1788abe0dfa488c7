from tasks import caption, refcoco  # noqa: F401  (registers the tasks)
