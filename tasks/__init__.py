from tasks import caption, multitask, refcoco, weight_average  # noqa: F401  (registers the tasks)
