"""An OFA or UnIVAL checkpoint as a UniGround model and task: their task options carried over, OFA's vocabulary.

OFA's and UnIVAL's fine-tuning tasks map onto UniGround's (``vqa_gen`` is ``vqa``,
``video_vqa_gen`` ``video_qa``); the task reads OFA's BPE files from ``bpe_dir`` so that token
ids match the checkpoint. A UnIVAL checkpoint's task also reads its media as UnIVAL's datasets
do (``unival_inputs``), with the checkpoint's frame count, frame size and audio length.
"""
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY
from omegaconf import OmegaConf

from models.ofa import OFACheckpointError, OFAModel, ofa_model_from_state
from models.unival import UnIVALModel, checkpoint_model_class
from utils.checkpoint import load_state

OFA_TASKS = {"refcoco": "refcoco", "caption": "caption", "vqa_gen": "vqa", "snli_ve": "snli_ve",
             "video_caption": "video_caption", "video_vqa_gen": "video_qa", "audio_caption": "audio_caption"}
CARRIED_OPTIONS = {  # theirs -> ours, the same meaning in both
    "patch_image_size": "patch_image_size", "num_bins": "num_bins", "max_src_length": "max_src_length",
    "max_tgt_length": "max_tgt_length"}
UNIVAL_CARRIED_OPTIONS = {"num_frames": "num_frames", "patch_frame_size": "video_frame_size",
                          "sample_rate": "waveform_sample_rate"}
UNIVAL_CLIP_SAMPLES = 480000  # UnIVAL's max_audio_len default


def ofa_task_config(ofa_task, path, architecture=OFAModel):
    name = OFA_TASKS.get(ofa_task.get("_name"))
    if name is None:
        raise OFACheckpointError(f"{path}: {architecture.family} task {ofa_task.get('_name')!r} has no UniGround "
                                 f"counterpart (known: {', '.join(OFA_TASKS)})")
    cfg = OmegaConf.structured(TASK_DATACLASS_REGISTRY[name])
    unival = architecture is UnIVALModel
    for theirs, ours in {**CARRIED_OPTIONS, **(UNIVAL_CARRIED_OPTIONS if unival else {})}.items():
        if ofa_task.get(theirs) is not None:
            cfg[ours] = ofa_task[theirs]
    if unival:
        cfg.unival_inputs = True
        cfg.max_audio_seconds = (ofa_task.get("max_audio_len") or UNIVAL_CLIP_SAMPLES) / cfg.waveform_sample_rate
    return name, cfg


def load_ofa_model_and_task(path, bpe_dir, overrides=None, trust_pickle=False):
    """([model], task) for an OFA or UnIVAL checkpoint, the task's options overridden by ``overrides``."""
    state = load_state(path, trust_pickle)
    architecture = checkpoint_model_class(state)
    name, cfg = ofa_task_config(dict((state.get("cfg") or {}).get("task") or {}), path, architecture)
    cfg.seed = ((state.get("cfg") or {}).get("common") or {}).get("seed", 1)
    cfg.bpe_dir = bpe_dir
    for key, value in (overrides or {}).items():
        if key != "vocab_dir":
            cfg[key] = value
    task = TASK_REGISTRY[name].setup_task(cfg)
    model = ofa_model_from_state(state, path, architecture)
    rows, size = model.encoder.embed_tokens.num_embeddings, len(task.vocab.dictionary)
    if rows != size:
        raise OFACheckpointError(f"{path}: the vocabulary of {bpe_dir} has {size} entries but the checkpoint's "
                                 f"embeddings have {rows} rows")
    return [model], task
