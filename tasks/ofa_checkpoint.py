"""An OFA checkpoint as a UniGround model and task: OFA's task options carried over, OFA's vocabulary.

OFA's fine-tuning tasks map onto UniGround's (``vqa_gen`` is ``vqa``); the task
reads OFA's BPE files from ``bpe_dir`` so that token ids match the checkpoint, preprocesses
as OFA's datasets do (``ofa_preprocessing``: PIL's bicubic resize, OFA's text cleaning,
targets after a space) with the checkpoint's image size, bins and box span, and evaluates
with the settings of OFA's evaluation scripts. Options given by the user override all of these.
"""
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY
from omegaconf import OmegaConf

from models.ofa import OFACheckpointError, ofa_model_from_state
from utils.checkpoint import load_state

OFA_TASKS = {"refcoco": "refcoco", "caption": "caption", "vqa_gen": "vqa", "snli_ve": "snli_ve"}
# OFA's task option -> UniGround's of the same meaning. OFA's max_src_length and max_tgt_length are not
# among them: OFA cuts texts to that many words, UniGround cuts nothing and sizes its token limits to the data.
CARRIED_OPTIONS = {"patch_image_size": "patch_image_size", "num_bins": "num_bins",
                   "max_image_size": "bin_span", "add_caption": "add_premise"}
# OFA task options whose other values change what the model sees -> the values computed here.
UNSUPPORTED_OPTIONS = {"prompt_type": (None, "none", "prev_output"), "imagenet_default_mean_and_std": (None, False),
                       "add_object": (None, False)}
# How OFA's run_scripts/*/evaluate_*.sh evaluate each task: beam search settings, and beam search or
# every candidate scored.
OFA_GENERATION = {
    "caption": {"beam": 5, "max_len_b": 16, "no_repeat_ngram_size": 3},
    "refcoco": {"beam": 5, "min_len": 4, "max_len_a": 0, "max_len_b": 4, "no_repeat_ngram_size": 3},
    "vqa_gen": {"beam": 5, "unnormalized": True, "temperature": 1.0},
}
OFA_EVAL_MODES = {"vqa_gen": "beam", "snli_ve": "candidates"}


def ofa_task_config(ofa_task, path):
    """(UniGround task name, its config) for an OFA checkpoint's task options: OFA's preprocessing, the
    options OFA's task carries, and OFA's evaluation mode."""
    ofa_name = ofa_task.get("_name")
    name = OFA_TASKS.get(ofa_name)
    if name is None:
        raise OFACheckpointError(f"{path}: OFA task {ofa_name!r} has no UniGround counterpart "
                                 f"(known: {', '.join(OFA_TASKS)})")
    unsupported = [f"{option}={ofa_task[option]!r}" for option, plain in UNSUPPORTED_OPTIONS.items()
                   if ofa_task.get(option) not in plain]
    if unsupported:
        raise OFACheckpointError(f"{path}: OFA task options not implemented here: {', '.join(unsupported)}")
    cfg = OmegaConf.structured(TASK_DATACLASS_REGISTRY[name])
    cfg.ofa_preprocessing = True
    for option, own in CARRIED_OPTIONS.items():
        if ofa_task.get(option) is not None and own in cfg:
            cfg[own] = ofa_task[option]
    cfg.decoder_prompt = ofa_task.get("prompt_type") == "prev_output"  # OFA's VQA and SNLI-VE fine-tuning
    if ofa_name in OFA_EVAL_MODES:
        cfg.eval_mode = OFA_EVAL_MODES[ofa_name]
    return name, cfg


def setup_ofa_task(ofa_task, path, bpe_dir, overrides=None, seed=1):
    """The UniGround task of an OFA checkpoint's task options on OFA's vocabulary in ``bpe_dir``, its options
    overridden by ``overrides`` (``data``, ...), generating as OFA's evaluation scripts do."""
    name, cfg = ofa_task_config(ofa_task, path)
    cfg.seed, cfg.bpe_dir = seed, bpe_dir
    for key, value in (overrides or {}).items():
        if key != "vocab_dir":
            cfg[key] = value
    task = TASK_REGISTRY[name].setup_task(cfg)
    task.generation_defaults = dict(OFA_GENERATION.get(ofa_task.get("_name"), {}))
    return task


def load_ofa_model_and_task(path, bpe_dir, overrides=None, trust_pickle=False):
    """([model], task) for an OFA checkpoint, the task's options overridden by ``overrides`` (``data``, ...)."""
    state = load_state(path, trust_pickle)
    cfg = state.get("cfg") or {}
    task = setup_ofa_task(dict(cfg.get("task") or {}), path, bpe_dir, overrides,
                          seed=(cfg.get("common") or {}).get("seed", 1))
    model = ofa_model_from_state(state, path)
    rows, size = model.encoder.embed_tokens.num_embeddings, len(task.vocab.dictionary)
    if rows != size:
        raise OFACheckpointError(f"{path}: the vocabulary of {bpe_dir} has {size} entries but the checkpoint's "
                                 f"embeddings have {rows} rows")
    return [model], task
