"""An OFA checkpoint as a UniGround model and task: OFA's task options carried over, OFA's vocabulary.

OFA's fine-tuning tasks map onto UniGround's (``vqa_gen`` is ``vqa``); the task
reads OFA's BPE files from ``bpe_dir`` so that token ids match the checkpoint.
"""
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY
from omegaconf import OmegaConf

from models.ofa import OFACheckpointError, ofa_model_from_state
from utils.checkpoint import load_state

OFA_TASKS = {"refcoco": "refcoco", "caption": "caption", "vqa_gen": "vqa", "snli_ve": "snli_ve"}
CARRIED_OPTIONS = ("patch_image_size", "num_bins", "max_src_length", "max_tgt_length")  # same meaning in both


def ofa_task_config(ofa_task, path):
    name = OFA_TASKS.get(ofa_task.get("_name"))
    if name is None:
        raise OFACheckpointError(f"{path}: OFA task {ofa_task.get('_name')!r} has no UniGround counterpart "
                                 f"(known: {', '.join(OFA_TASKS)})")
    cfg = OmegaConf.structured(TASK_DATACLASS_REGISTRY[name])
    for option in CARRIED_OPTIONS:
        if ofa_task.get(option) is not None:
            cfg[option] = ofa_task[option]
    return name, cfg


def load_ofa_model_and_task(path, bpe_dir, overrides=None, trust_pickle=False):
    """([model], task) for an OFA checkpoint, the task's options overridden by ``overrides`` (``data``, ...)."""
    state = load_state(path, trust_pickle)
    name, cfg = ofa_task_config(dict((state.get("cfg") or {}).get("task") or {}), path)
    cfg.seed = ((state.get("cfg") or {}).get("common") or {}).get("seed", 1)
    cfg.bpe_dir = bpe_dir
    for key, value in (overrides or {}).items():
        if key != "vocab_dir":
            cfg[key] = value
    task = TASK_REGISTRY[name].setup_task(cfg)
    model = ofa_model_from_state(state, path)
    rows, size = model.encoder.embed_tokens.num_embeddings, len(task.vocab.dictionary)
    if rows != size:
        raise OFACheckpointError(f"{path}: the vocabulary of {bpe_dir} has {size} entries but the checkpoint's "
                                 f"embeddings have {rows} rows")
    return [model], task
