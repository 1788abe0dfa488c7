from tasks import caption, multitask, refcoco  # noqa: F401  (registers the tasks)
