"""An OFA or UnIVAL checkpoint as a UniGround model and task: their task options carried over, OFA's vocabulary.

OFA's and UnIVAL's fine-tuning tasks map onto UniGround's (``vqa_gen`` is ``vqa``, ``video_vqa_gen``
``video_qa``); the task reads OFA's BPE files from ``bpe_dir`` so that token ids match the checkpoint,
preprocesses as OFA's datasets do (``ofa_preprocessing``: PIL's bicubic resize, OFA's text cleaning,
targets after a space) with the checkpoint's image size, bins and box span, and evaluates with the
settings of OFA's evaluation scripts. A UnIVAL checkpoint's task also reads its media as UnIVAL's
datasets do (``unival_inputs``), with the checkpoint's frame count, frame size and audio length.
Options given by the user override all of these.
"""
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY
from omegaconf import OmegaConf

from data.ofa_vocab import OFAVocabulary
from models.ofa import OFA_ARCHITECTURES, OFACheckpointError, OFAModel, ofa_model_from_state
from models.unival import UnIVALModel, checkpoint_model_class
from tasks.options import check_task_options
from utils.checkpoint import CheckpointMismatchError, load_state

OFA_TASKS = {"refcoco": "refcoco", "caption": "caption", "vqa_gen": "vqa", "snli_ve": "snli_ve",
             "video_caption": "video_caption", "video_vqa_gen": "video_qa", "audio_caption": "audio_caption"}
# OFA's task option -> UniGround's of the same meaning. OFA's max_src_length and max_tgt_length are not
# among them: OFA cuts texts to that many words, UniGround cuts nothing and sizes its token limits to the data.
CARRIED_OPTIONS = {"patch_image_size": "patch_image_size", "num_bins": "num_bins",
                   "max_image_size": "bin_span", "add_caption": "add_premise"}
UNIVAL_CARRIED_OPTIONS = {"num_frames": "num_frames", "patch_frame_size": "video_frame_size",
                          "sample_rate": "waveform_sample_rate"}
UNIVAL_CLIP_SAMPLES = 480000  # UnIVAL's max_audio_len default
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


def ofa_task_config(ofa_task, path, architecture=OFAModel):
    """(UniGround task name, its config) for an OFA or UnIVAL checkpoint's task options: OFA's
    preprocessing, the options their task carries, and OFA's evaluation mode."""
    ofa_name = ofa_task.get("_name")
    name = OFA_TASKS.get(ofa_name)
    if name is None:
        raise OFACheckpointError(f"{path}: {architecture.family} task {ofa_name!r} has no UniGround counterpart "
                                 f"(known: {', '.join(OFA_TASKS)})")
    unsupported = [f"{option}={ofa_task[option]!r}" for option, plain in UNSUPPORTED_OPTIONS.items()
                   if ofa_task.get(option) not in plain]
    if unsupported:
        raise OFACheckpointError(f"{path}: {architecture.family} task options not implemented here: "
                                 f"{', '.join(unsupported)}")
    cfg = OmegaConf.structured(TASK_DATACLASS_REGISTRY[name])
    cfg.ofa_preprocessing = True
    unival = architecture is UnIVALModel
    for option, own in {**CARRIED_OPTIONS, **(UNIVAL_CARRIED_OPTIONS if unival else {})}.items():
        if ofa_task.get(option) is not None and own in cfg:
            cfg[own] = ofa_task[option]
    cfg.decoder_prompt = ofa_task.get("prompt_type") == "prev_output"  # OFA's VQA and SNLI-VE fine-tuning
    if ofa_name in OFA_EVAL_MODES:
        cfg.eval_mode = OFA_EVAL_MODES[ofa_name]
    if unival:
        cfg.unival_inputs = True
        cfg.max_audio_seconds = (ofa_task.get("max_audio_len") or UNIVAL_CLIP_SAMPLES) / cfg.waveform_sample_rate
    return name, cfg


def setup_ofa_task(ofa_task, path, bpe_dir, overrides=None, seed=1, architecture=OFAModel):
    """The UniGround task of an OFA or UnIVAL checkpoint's task options on OFA's vocabulary in ``bpe_dir``,
    its options overridden by ``overrides`` (``data``, ...), generating as OFA's evaluation scripts do."""
    name, cfg = ofa_task_config(ofa_task, path, architecture)
    check_task_options(name, cfg, overrides or {})
    cfg.seed, cfg.bpe_dir = seed, bpe_dir
    for key, value in (overrides or {}).items():
        if key != "vocab_dir":
            cfg[key] = value
    task = TASK_REGISTRY[name].setup_task(cfg)
    task.generation_defaults = dict(OFA_GENERATION.get(ofa_task.get("_name"), {}))
    return task


def load_ofa_model_and_task(path, bpe_dir, overrides=None, trust_pickle=False):
    """([model], task) for an OFA or UnIVAL checkpoint, the task's options overridden by ``overrides``."""
    state = load_state(path, trust_pickle)
    architecture = checkpoint_model_class(state)
    cfg = state.get("cfg") or {}
    model = ofa_model_from_state(state, path, architecture)
    if not (overrides or {}).get("data"):  # nothing to size the length limits to (predict.py, serve.py): the model's
        overrides = {**dict(zip(("max_src_length", "max_tgt_length"), model.max_positions())), **(overrides or {})}
    task = setup_ofa_task(dict(cfg.get("task") or {}), path, bpe_dir, overrides,
                          seed=(cfg.get("common") or {}).get("seed", 1), architecture=architecture)
    rows, size = model.encoder.embed_tokens.num_embeddings, len(task.vocab.dictionary)
    if rows != size:
        raise OFACheckpointError(f"{path}: the vocabulary of {bpe_dir} has {size} entries but the checkpoint's "
                                 f"embeddings have {rows} rows")
    return [model], task


def ofa_task_options(state):
    """The task options of an OFA checkpoint (one of OFA's architectures, options in ``cfg``), else None."""
    cfg = state.get("cfg") or {}
    if getattr(cfg.get("model"), "arch", None) not in OFA_ARCHITECTURES:
        return None
    return cfg.get("task") or {}


def check_ofa_vocabulary(task, ofa_task, path):
    """An OFA checkpoint records no vocabulary fingerprint: its ids are those of OFA's vocabulary (the
    embedding rows are checked against it when the weights load) and its bins are its task's."""
    if not isinstance(task.vocab, OFAVocabulary):
        raise CheckpointMismatchError(f"{path}: an OFA checkpoint, whose token ids are those of OFA's GPT-2 BPE "
                                      "vocabulary: give --bpe-dir (OFA's dict.txt, encoder.json, vocab.bpe) "
                                      "instead of --vocab-dir")
    bins = ofa_task.get("num_bins")
    if bins is not None and bins != task.vocab.num_bins:
        raise CheckpointMismatchError(f"{path}: num_bins {bins} in the checkpoint, {task.vocab.num_bins} here: "
                                      "decoding would be wrong; use the checkpoint's value")
