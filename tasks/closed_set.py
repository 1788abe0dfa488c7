"""Tasks whose output is one of a fixed set of texts: VQA answers, SNLI-VE labels, entity names.

The texts become token sequences in one ``TokenTrie``, which constrains beam
search and masks the training loss. Evaluation has two modes (``--eval-mode``):
``beam``, constrained beam search, and ``candidates``, which scores every
candidate by its log-likelihood under the model (teacher forced, the softmax
at each step over the tokens the trie allows there, as in training and as
OFA/UnIVAL's "allcand" inference) and keeps the best. A task file declares
its candidate texts (``choice_texts``) and what a chosen index means.
"""
import logging
from dataclasses import dataclass, field

import torch
from fairseq.data import data_utils

from decoding.trie import TokenTrie
from evaluation.metrics import seen_unseen_accuracy
from evaluation.report import SampleView
from tasks.base import UniGroundConfig, UniGroundTask
from tasks.results import Answer

logger = logging.getLogger(__name__)

EVAL_MODES = ("beam", "candidates")


@dataclass
class ClosedSetConfig(UniGroundConfig):
    eval_mode: str = field(default="beam", metadata={
        "help": "evaluation: 'beam' (beam search constrained to the candidates) or 'candidates' (score every "
                "candidate by its log-likelihood, keep the best)"})
    candidate_logits: int = field(default=1 << 24, metadata={
        "help": "candidates mode: most logits (pairs x length x vocabulary) computed by one decoder pass"})


class ClosedSetTask(UniGroundTask):
    def __init__(self, cfg, vocab):
        if cfg.eval_mode not in EVAL_MODES:
            raise ValueError(f"--eval-mode must be one of {', '.join(EVAL_MODES)}, got {cfg.eval_mode!r}")
        super().__init__(cfg, vocab)
        if self.choices_known():
            self.constraint  # noqa: B018  built now: candidates that the length limit cuts are refused at set-up

    # ---- what a closed-set task declares ------------------------------------------------------

    def choice_texts(self):
        """The candidate output texts, in the order ``choice_of`` reports them."""
        raise NotImplementedError

    def choices_known(self):
        """False when the candidates come only later (from a checkpoint's task state): the trie is
        then built at first use."""
        return True

    # ---- the trie -----------------------------------------------------------------------------

    def least_target_length(self):
        """The longest candidate and EOS: every candidate can be generated whole."""
        if not self.choices_known():
            return 1
        return max(len(ids) for ids in self.vocab.encode_outputs(self.choice_texts())) + 1

    def build_constraint(self):
        texts = list(self.choice_texts())
        eos = self.vocab.dictionary.eos()
        encoded = self.vocab.encode_outputs(texts)
        over = sum(len(ids) >= self.cfg.max_tgt_length for ids in encoded)
        if over:
            raise ValueError(f"{over} of {len(texts)} candidate texts need more than --max-tgt-length "
                             f"{self.cfg.max_tgt_length} tokens (the longest needs {max(map(len, encoded)) + 1}); "
                             "raise --max-tgt-length, or leave it unset to size it to the candidates. None is cut.")
        empty = [text for text, ids in zip(texts, encoded) if not ids]
        if empty:
            raise ValueError(f"candidate text {empty[0]!r} encodes to no tokens")
        self._choices = texts
        self.choice_tokens = [ids + [eos] for ids in encoded]
        return TokenTrie(self.choice_tokens, eos, len(self.vocab.dictionary))

    @property
    def trie(self):
        return self.constraint

    @property
    def choices(self):
        """The candidate texts, in the order ``choice_of`` reports them (read when the trie is built)."""
        self.constraint  # noqa: B018
        return self._choices

    def choice_of(self, tokens):
        """The index of the candidate that generated tokens (no EOS) spell, or None."""
        return self.trie.lookup(tokens)

    def choice_target(self, index):
        """The target tensor of candidate ``index`` (its tokens and EOS)."""
        return torch.tensor(self.choice_tokens[index], dtype=torch.long)

    # ---- evaluation -----------------------------------------------------------------------------

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        prefix_allowed_tokens_fn=None):
        if not self.cfg.unconstrained:
            self.fit_generation_to_trie(args)
        # Rank finished candidates by their whole log-likelihood, as the candidates mode does, rather
        # than by fairseq's default per-token mean, which would favour the longer of two answers.
        args.unnormalized = True
        return super().build_generator(models, args, seq_gen_cls, extra_gen_cls_kwargs, prefix_allowed_tokens_fn)

    def fit_generation_to_trie(self, args):
        """Beam size and length limit that constrained beam search can always finish with.

        fairseq finishes a sentence once it holds ``beam`` finished hypotheses, and a hypothesis
        pushed off the trie (score -inf) never finishes: with more beams than candidates the search
        would run into the length limit and fail, so the beam is at most the candidate count. And
        a hypothesis cut by the length limit inside a candidate has no token left (fairseq forces
        EOS there, which the trie forbids), so the longest candidate must fit.
        """
        if getattr(args, "beam", 5) > self.trie.num_distinct:
            logger.warning("beam %d is more than the %d candidates: using beam %d", args.beam,
                           self.trie.num_distinct, self.trie.num_distinct)
            args.beam = self.trie.num_distinct
        longest = self.trie.max_length - 1  # output tokens: the generator's limit adds any decoder prompt
        if getattr(args, "max_len_a", 0) == 0 and getattr(args, "max_len_b", 200) < longest:
            logger.warning("raising the generation limit max_len_b from %d to %d tokens, the longest candidate",
                           args.max_len_b, longest)
            args.max_len_b = longest

    def predict(self, generator, models, sample):
        if self.cfg.eval_mode == "beam":
            return super().predict(generator, models, sample)
        scores, best = self.candidate_scores(models, sample).max(1)
        return [self.scored_prediction(self.choice_tokens[c][:-1], meta, score / len(self.choice_tokens[c]))
                for c, score, meta in zip(best.tolist(), scores, sample["meta"])]

    def candidate_tensors(self):
        """Every candidate as a padded target and decoder input, made once per trie."""
        if getattr(self, "_candidate_tensors", (None,))[0] is not self.trie:
            pad, eos = self.vocab.dictionary.pad(), self.vocab.dictionary.eos()
            tokens = [torch.tensor(t) for t in self.choice_tokens]
            self._candidate_tensors = (self.trie, data_utils.collate_tokens(tokens, pad, eos),
                                       self.decoder_inputs(tokens))
        return self._candidate_tensors[1:]

    def pair_tensors(self, sample, which, choice):
        """Targets and decoder inputs of (sample, candidate) pairs: the candidate's, after the sample's
        decoder prompt (padding in the target) if there is one."""
        targets, previous = self.candidate_tensors()
        if "decoder_prompts" not in sample:
            return targets[choice], previous[choice]
        pad = self.vocab.dictionary.pad()
        prompts = [sample["decoder_prompts"][i][:sample["meta"][i]["decoder_prompt_length"]].cpu()
                   for i in which.tolist()]
        tokens = [torch.tensor(self.choice_tokens[c]) for c in choice.tolist()]
        targets = [torch.cat([p.new_full(p.shape, pad), t]) for p, t in zip(prompts, tokens)]
        inputs = self.decoder_inputs([torch.cat(pair) for pair in zip(prompts, tokens)])
        return data_utils.collate_tokens(targets, pad), inputs

    @torch.no_grad()
    def candidate_scores(self, models, sample):
        """B x C log-likelihoods of every candidate for every sample (mean over an ensemble).

        The decoder runs teacher forced on (sample, candidate) pairs, as many per pass as
        ``--candidate-logits`` allows, each after the sample's decoder prompt if there is one; each
        step's softmax is over the tokens the trie allows.
        """
        pad = self.vocab.dictionary.pad()
        num_samples, num_choices = sample["net_input"]["src_tokens"].size(0), len(self.choice_tokens)
        length = self.trie.max_length + (sample["decoder_prompts"].size(1) if "decoder_prompts" in sample else 0)
        per_pass = max(1, self.cfg.candidate_logits // (length * len(self.vocab.dictionary)))
        encoder_input = {k: v for k, v in sample["net_input"].items() if k != "prev_output_tokens"}
        total = None
        for model in models:
            encoder_out = model.encoder(**encoder_input)
            device = sample["net_input"]["src_tokens"].device
            scores = torch.empty(num_samples * num_choices, device=device)
            for start in range(0, num_samples * num_choices, per_pass):
                pairs = torch.arange(start, min(start + per_pass, num_samples * num_choices), device=device)
                which, choice = pairs // num_choices, (pairs % num_choices).cpu()
                target, prev = (t.to(device) for t in self.pair_tensors(sample, which.cpu(), choice))
                logits, extra = model.decoder(prev, encoder_out=model.encoder.reorder_encoder_out(encoder_out, which))
                masks = self.output_constraint().for_batch([sample["meta"][i] for i in which.tolist()])
                logits = logits.masked_fill(~masks.training_masks(target), float("-inf"))
                lprobs = model.get_normalized_probs((logits, extra), log_probs=True)
                token_scores = lprobs.gather(2, target.unsqueeze(2)).squeeze(2).masked_fill(target.eq(pad), 0.0)
                scores[pairs] = token_scores.sum(1).float()
            scores = scores.view(num_samples, num_choices)
            total = scores if total is None else total + scores
        return total / len(models)


class LabelTask(ClosedSetTask):
    """A closed-set task whose prediction is one label of a fixed set (``decode_prediction`` gives
    "prediction" and the row's "label"), scored by accuracy."""

    def score(self, predictions, full=False):
        return seen_unseen_accuracy([p["prediction"] == p["label"] for p in predictions])

    def report_view(self, prediction, row):
        return SampleView(str(prediction["prediction"]), prediction["label"])

    def result(self, prediction):
        return Answer(prediction["score"], prediction["prediction"])
