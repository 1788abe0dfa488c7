"""Corpus metrics shared by the tasks and evaluate.py."""
import logging
import shutil

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from utils.codec import box_iou

logger = logging.getLogger(__name__)


def grounding_scores(predicted_boxes, reference_boxes):
    """acc@0.5 (share of boxes with IoU >= 0.5) and mean IoU; a missing prediction (None) has IoU 0."""
    ious = [box_iou(p, r) if p is not None else 0.0 for p, r in zip(predicted_boxes, reference_boxes)]
    return {"acc@0.5": float(np.mean([iou >= 0.5 for iou in ious])), "mean_iou": float(np.mean(ious))}


def ptb_tokenize(texts_by_id):
    """{id: [text, ...]} -> {id: [tokenised text, ...]} with the COCO evaluation's tokenizer (Java)."""
    return PTBTokenizer().tokenize({k: [{"caption": t} for t in v] for k, v in texts_by_id.items()})


def caption_scores(hypotheses, references, full=True):
    """hypotheses {id: str}, references {id: [str, ...]} -> metrics through pycocoevalcap.

    ``full``: BLEU-4, METEOR, ROUGE-L and CIDEr on PTB-tokenised text, as the COCO
    caption evaluation computes them (METEOR and the tokenizer need Java). Otherwise
    only CIDEr on lower-cased whitespace tokens, cheap enough for every validation.
    """
    if not full:
        res = {k: [" ".join(v.lower().split())] for k, v in hypotheses.items()}
        gts = {k: [" ".join(r.lower().split()) for r in references[k]] for k in hypotheses}
        return {"cider": float(Cider().compute_score(gts, res)[0])}
    if shutil.which("java") is None:
        raise RuntimeError("caption evaluation needs Java for pycocoevalcap's PTB tokenizer and METEOR: "
                           "install a JRE (Debian: apt-get install default-jre-headless)")
    res = ptb_tokenize({k: [v] for k, v in hypotheses.items()})
    gts = ptb_tokenize({k: references[k] for k in hypotheses})
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
    return {
        "BLEU-4": float(bleu[3]),
        "METEOR": float(Meteor().compute_score(gts, res)[0]),
        "ROUGE-L": float(Rouge().compute_score(gts, res)[0]),
        "CIDEr": float(Cider().compute_score(gts, res)[0]),
    }
