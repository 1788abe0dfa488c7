"""Task options given by name (evaluate.py's and predict.py's --task-option), checked against the task's config."""


class UnknownTaskOptionError(ValueError):
    pass


def check_task_options(name, cfg, options):
    """Refuse options that task ``name``'s config ``cfg`` has no field for: fairseq's override of a
    checkpoint's options skips them unnoticed, so a misspelt option would change nothing."""
    unknown = sorted(set(options) - set(cfg))
    if unknown:
        raise UnknownTaskOptionError(f"the {name} task has no option {', '.join(map(repr, unknown))} "
                                     f"(--task-option)")
