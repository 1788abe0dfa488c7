"""Corpus metrics shared by the tasks and evaluate.py."""
import functools
import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections import Counter

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

from evaluation.vqa_accuracy import normalise_answer
from geometry.codec import box_iou, span_iou

logger = logging.getLogger(__name__)
PTB_JAR = os.path.join(os.path.dirname(ptbtokenizer.__file__), ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)


def box_ious(predicted_boxes, reference_boxes):
    """IoU of each predicted box with its reference; a missing prediction (None) has IoU 0."""
    return [box_iou(p, r) if p is not None else 0.0 for p, r in zip(predicted_boxes, reference_boxes)]


def grounding_scores(predicted_boxes, reference_boxes):
    """acc@0.5 (share of boxes with IoU >= 0.5) and mean IoU; a missing prediction (None) has IoU 0."""
    ious = box_ious(predicted_boxes, reference_boxes)
    return {"acc@0.5": float(np.mean([iou >= 0.5 for iou in ious])), "mean_iou": float(np.mean(ious))}


def ptb_tokenize(texts_by_id):
    """{id: [text, ...]} -> {id: [tokenised text, ...]} with the COCO evaluation's tokenizer (Java):
    PTB tokens, lower-cased, punctuation tokens dropped (``turkey's.`` -> ``turkey 's``).

    pycocoevalcap's ``PTBTokenizer`` run (its jar, options and punctuation list) with three differences:
    the texts go through a file in the system's temporary folder, not in the installed package (read-only
    in many cluster installs and containers); a failed Java run is an error with its message; and every
    line break a text holds becomes a space, so that one text is one line and no caption is lost or
    shifted onto another id (pycocoevalcap only replaces ``\\n``)."""
    if shutil.which("java") is None:
        raise RuntimeError("caption scoring needs Java for pycocoevalcap's PTB tokenizer (and METEOR): "
                           "install a JRE (Debian: apt-get install default-jre-headless)")
    ids = [k for k, texts in texts_by_id.items() for _ in texts]
    lines = [" ".join(text.splitlines()) for texts in texts_by_id.values() for text in texts]
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt") as sentences:
        sentences.write("\n".join(lines))
        sentences.flush()
        run = subprocess.run(["java", "-cp", PTB_JAR, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                              "-lowerCase", sentences.name], capture_output=True)
    for line in run.stderr.decode(errors="replace").splitlines():
        logger.debug("%s", line)
    tokenised = run.stdout.decode().split("\n")
    if run.returncode != 0 or len(tokenised) != max(len(lines), 1):  # Java writes a line per line read
        raise RuntimeError(f"pycocoevalcap's PTB tokenizer failed (exit {run.returncode}, {len(tokenised)} lines "
                           f"for {len(lines)} texts): {run.stderr.decode(errors='replace')[-1000:]}")
    out = {k: [] for k in texts_by_id}
    for k, line in zip(ids, tokenised):
        out[k].append(" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS))
    return out


def ptb_words(texts):
    """Each text's token list, tokenised as ``ptb_tokenize`` does (one Java run for all)."""
    tokenised = ptb_tokenize(dict(enumerate([text] for text in texts)))
    return [tokenised[i][0].split() for i in range(len(texts))]


def caption_inputs(hypotheses, references):
    """(references, hypotheses) as pycocoevalcap's scorers take them: {id: [text, ...]}, the raw texts
    PTB-tokenised as the COCO caption evaluation does (``ptb_tokenize``)."""
    tokenised = ptb_tokenize({**{("ref", k): references[k] for k in hypotheses},
                              **{("hyp", k): [v] for k, v in hypotheses.items()}})
    return {k: tokenised["ref", k] for k in hypotheses}, {k: tokenised["hyp", k] for k in hypotheses}


@functools.cache
def meteor():
    """One METEOR scorer for the process: each is a Java process that loads its paraphrase tables (seconds)."""
    return Meteor()


def caption_scores(hypotheses, references, full=True):
    """hypotheses {id: str}, references {id: [raw str, ...]} -> metrics through pycocoevalcap, on
    PTB-tokenised text as the COCO caption evaluation computes them (``caption_inputs``).

    ``full``: BLEU-4, METEOR (Java), ROUGE-L and CIDEr. Otherwise only CIDEr, cheap enough for
    every validation.
    """
    gts, res = caption_inputs(hypotheses, references)
    if not full:
        return {"cider": float(Cider().compute_score(gts, res)[0])}
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
    return {
        "BLEU-4": float(bleu[3]),
        "METEOR": float(meteor().compute_score(gts, res)[0]),
        "ROUGE-L": float(Rouge().compute_score(gts, res)[0]),
        "CIDEr": float(Cider().compute_score(gts, res)[0]),
    }


def ngram_counts(tokens, n=4):
    """Counter of the 1- to n-grams (tuples) of a token list."""
    return Counter(tuple(tokens[i:i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def document_frequencies(references, n=4):
    """(n-gram -> number of documents using it, number of documents) of ``references``, one list of
    token lists per document (an image's captions): what CIDEr-D's idf weights come from."""
    frequencies = Counter()
    for captions in references:
        frequencies.update({gram for tokens in captions for gram in ngram_counts(tokens, n)})
    return frequencies, len(references)


class CiderD:
    """CIDEr-D (Vedantam et al. 2015, as pycocoevalcap's ``Cider`` computes it: clipped tf-idf n-gram
    cosines, a Gaussian length penalty, 10x the mean over n and references) with its document
    frequencies fixed in advance, as self-critical training scores samples against the training
    corpus's statistics rather than the batch's. Given the frequencies of the references being scored,
    it equals pycocoevalcap's per-image scores."""

    def __init__(self, frequencies, documents, n=4, sigma=6.0):
        if documents < 1:
            raise ValueError("CIDEr-D needs document frequencies from at least one document")
        self.frequencies, self.log_documents, self.n, self.sigma = frequencies, math.log(documents), n, sigma

    def vector(self, tokens):
        """(per order, n-gram -> tf-idf weight; per order, the vector's norm; length). The length is
        the bigram count, as pycocoevalcap counts it, so that the penalties agree."""
        counts = ngram_counts(tokens, self.n)
        weights = [{} for _ in range(self.n)]
        for gram, count in counts.items():
            idf = self.log_documents - math.log(max(1.0, self.frequencies.get(gram, 0)))
            weights[len(gram) - 1][gram] = count * idf
        norms = [math.sqrt(sum(w * w for w in order.values())) for order in weights]
        return weights, norms, sum(count for gram, count in counts.items() if len(gram) == 2)

    def similarity(self, hypothesis, reference):
        """Sum over orders of the clipped cosine, times the length penalty."""
        (hyp, hyp_norms, hyp_length), (ref, ref_norms, ref_length) = hypothesis, reference
        penalty = math.exp(-((hyp_length - ref_length) ** 2) / (2 * self.sigma ** 2))
        total = 0.0
        for order in range(self.n):
            value = sum(min(w, ref[order].get(g, 0.0)) * ref[order].get(g, 0.0) for g, w in hyp[order].items())
            if hyp_norms[order] and ref_norms[order]:
                value /= hyp_norms[order] * ref_norms[order]
            total += value * penalty
        return total

    def scores(self, hypotheses, references):
        """CIDEr-D of each hypothesis (a token list) against its references (a list of token lists);
        references repeated for several hypotheses (the samples of one image) are weighed once."""
        reference_vectors = {}
        scores = np.empty(len(hypotheses))
        for i, (tokens, captions) in enumerate(zip(hypotheses, references)):
            key = tuple(map(tuple, captions))
            if key not in reference_vectors:
                reference_vectors[key] = [self.vector(caption) for caption in captions]
            vectors, hypothesis = reference_vectors[key], self.vector(tokens)
            scores[i] = 10.0 * sum(self.similarity(hypothesis, r) for r in vectors) / (self.n * len(vectors))
        return scores


def caption_sample_cider(hypotheses, references):
    """{id: CIDEr of that caption}, with the document frequencies of the whole set, as pycocoevalcap
    computes the per-image scores whose mean is the corpus CIDEr (tokenised as ``caption_scores``)."""
    gts, res = caption_inputs(hypotheses, references)
    _, per_image = Cider().compute_score(gts, res)
    return {k: float(v) for k, v in zip(gts, per_image)}


def temporal_grounding_scores(predicted_spans, reference_spans):
    """R@1 at temporal IoU 0.3, 0.5 and 0.7 and mean IoU; a missing prediction (None) has IoU 0."""
    ious = np.array([span_iou(p, r) if p is not None else 0.0 for p, r in zip(predicted_spans, reference_spans)])
    scores = {f"r1@{t}": float(np.mean(ious >= t)) for t in (0.3, 0.5, 0.7)}
    scores["mean_iou"] = float(np.mean(ious))
    return scores


def mask_overlap(predicted, reference):
    """(intersection, union) in pixels of two bool masks of one shape."""
    predicted, reference = np.asarray(predicted, dtype=bool), np.asarray(reference, dtype=bool)
    if predicted.shape != reference.shape:
        raise ValueError(f"mask shapes differ: {predicted.shape} and {reference.shape}")
    return int(np.count_nonzero(predicted & reference)), int(np.count_nonzero(predicted | reference))


def overlap_scores(intersections, unions):
    """Referring segmentation metrics from per-sample pixel counts: cIoU (summed intersections over
    summed unions, so large objects weigh more), mIoU (mean per-sample IoU) and acc@0.5 (share of
    samples with IoU >= 0.5). A sample whose union is empty has IoU 0, as for boxes."""
    intersections, unions = np.asarray(intersections, dtype=float), np.asarray(unions, dtype=float)
    ious = np.divide(intersections, unions, out=np.zeros_like(intersections), where=unions > 0)
    total = unions.sum()
    return {"cIoU": float(intersections.sum() / total) if total > 0 else 0.0,
            "mIoU": float(ious.mean()), "acc@0.5": float(np.mean(ious >= 0.5))}


def segmentation_scores(predicted_masks, reference_masks):
    """cIoU, mIoU and acc@0.5 (``overlap_scores``) of pairs of bool masks."""
    overlaps = [mask_overlap(p, r) for p, r in zip(predicted_masks, reference_masks)]
    return overlap_scores([i for i, _ in overlaps], [u for _, u in overlaps])


def vqa_soft_accuracy(predicted_answers, references, normalise=True):
    """VQA accuracy as the official evaluation computes it from a row's candidates: a question scores
    the confidence its row lists for the predicted answer (0 if not listed, capped at 1), both compared
    after the official normalisation (evaluation/vqa_accuracy.py: "Two." matches "2"; of candidates equal after
    it, the most confident counts); the mean over questions. ``references``: one {answer: confidence}
    per question, the confidences being the official leave-one-out accuracies (evaluation/vqa_accuracy.py).
    Without ``normalise`` answers must match exactly (MSRVTT-QA's accuracy, its answers one each)."""
    scores = [min(1.0, _confidence_of(answer, refs, normalise)) if answer is not None else 0.0
              for answer, refs in zip(predicted_answers, references)]
    return {"vqa_score": float(np.mean(scores)) if scores else 0.0}


def _confidence_of(answer, references, normalise):
    if not normalise:
        return float(references.get(answer, 0.0))
    answer = normalise_answer(answer)
    return max((float(c) for r, c in references.items() if normalise_answer(r) == answer), default=0.0)


def seen_unseen_counts(correct, seen=None):
    """Correct answers and samples (``accuracy_correct``, ``accuracy_rows``), and with ``seen`` (True/False
    per sample, None where unknown) the same among seen and among unseen samples (``seen_accuracy_...``,
    ``unseen_accuracy_...``): counts that add up over sets of samples."""
    counts = {"accuracy_correct": int(sum(map(bool, correct))), "accuracy_rows": len(correct)}
    if seen is not None and any(s is not None for s in seen):
        for name, flag in (("seen", True), ("unseen", False)):
            picked = [bool(c) for c, s in zip(correct, seen) if s is flag]
            counts[f"{name}_accuracy_correct"], counts[f"{name}_accuracy_rows"] = sum(picked), len(picked)
    return counts


def accuracies_of_counts(counts):
    """Accuracy, and from the counts of seen and unseen samples (``seen_unseen_counts``) their accuracies
    and harmonic mean (0 if either is 0), each reported only when its samples exist."""
    scores = {}
    for name in ("accuracy", "seen_accuracy", "unseen_accuracy"):
        if counts.get(f"{name}_rows"):
            scores[name] = counts[f"{name}_correct"] / counts[f"{name}_rows"]
    scores.setdefault("accuracy", 0.0)
    if "seen_accuracy" in scores and "unseen_accuracy" in scores:
        a, b = scores["seen_accuracy"], scores["unseen_accuracy"]
        scores["harmonic_mean"] = 2 * a * b / (a + b) if a + b > 0 else 0.0
    return scores


def seen_unseen_accuracy(correct, seen=None):
    """Accuracy of per-sample booleans; with ``seen`` (True/False per sample, None where unknown) also
    the accuracy on seen and on unseen samples and their harmonic mean (0 if either is 0), each
    reported only when its samples exist."""
    return accuracies_of_counts(seen_unseen_counts(correct, seen))


def recall_at_k(ranks, ks):
    """Retrieval recall@k for each k of ``ks``: the share of samples whose gold entity's 1-based ``ranks``
    (None: not retrieved) is at most k."""
    return {f"recall@{k}": float(np.mean([r is not None and r <= k for r in ranks])) if ranks else 0.0 for k in ks}
