"""OFA's vocabulary: GPT-2 BPE (fairseq's ``gpt2`` bpe) over the ``dict.txt`` OFA ships, then its own tokens.

The dictionary is built as OFA's task builds it, so token ids match the
embeddings of OFA's checkpoints: fairseq's four specials, the lines of
``dict.txt`` (GPT-2 token ids written as words), ``<mask>``, ``<code_0..>``
(image codes) and ``<bin_0..>`` (box coordinates).
"""
import os

from fairseq.data import Dictionary
from fairseq.data.encoders.gpt2_bpe import GPT2BPE, GPT2BPEConfig

from data.vocab import SpecialTokens, fingerprint
from geometry.codec import IE_TOKENS, POLY, bin_token, special_tokens

BPE_FILES = ("dict.txt", "encoder.json", "vocab.bpe")
MASK = "<mask>"


def code_token(i):
    return f"<code_{i}>"


class MissingBPEFilesError(FileNotFoundError):
    """A folder without the BPE files OFA ships beside its checkpoints."""


class OFAVocabulary(SpecialTokens):
    """With ``num_time_bins``, UniGround's own tokens follow OFA's: ``<time_0..>``, ``<poly>`` and the IE
    tokens, for tasks that need them (a checkpoint fine-tuned from OFA gets fresh embeddings for them)."""

    def __init__(self, bpe_dir, num_bins=1000, code_dict_size=8192, num_time_bins=None):
        missing = [name for name in BPE_FILES if not os.path.isfile(os.path.join(bpe_dir, name))]
        if missing:
            raise MissingBPEFilesError(f"{bpe_dir}: OFA's BPE files missing: {', '.join(missing)} (OFA ships "
                                       f"{', '.join(BPE_FILES)} beside its checkpoints; name their folder with --bpe-dir)")
        self.bpe = GPT2BPE(GPT2BPEConfig(gpt2_encoder_json=os.path.join(bpe_dir, "encoder.json"),
                                         gpt2_vocab_bpe=os.path.join(bpe_dir, "vocab.bpe")))
        self.dictionary = Dictionary.load(os.path.join(bpe_dir, "dict.txt"))
        self.fingerprint = fingerprint(bpe_dir, BPE_FILES)
        self.mask = self.dictionary.add_symbol(MASK)
        self.first_code = len(self.dictionary)
        for i in range(code_dict_size):
            self.dictionary.add_symbol(code_token(i))
        self.first_bin, self.num_bins = len(self.dictionary), num_bins
        for i in range(num_bins):
            self.dictionary.add_symbol(bin_token(i))
        if num_time_bins is not None:
            self.fingerprint += f"+{num_time_bins}"  # another dictionary on the same files
            self.first_time, self.num_time_bins = len(self.dictionary), num_time_bins
            for token in special_tokens(0, num_time_bins):
                self.dictionary.add_symbol(token)
            self.poly = self.dictionary.index(POLY)
            self._ie = {token[1:-1]: self.dictionary.index(token) for token in IE_TOKENS}

    @property
    def source_prefix(self):
        return (self.dictionary.bos(),)  # OFA's sources start with <s>

    @property
    def decoder_start(self):
        return self.dictionary.bos()

    def encode_text(self, text):
        """Dictionary ids of ``text``; a GPT-2 token absent from ``dict.txt`` becomes ``<unk>``, as in OFA."""
        return [self.dictionary.index(token) for token in self.bpe.encode(text).split()]

    def encode_output(self, text):
        """A decoder output starts with a space, as OFA's targets do (" yes" is another GPT-2 token than "yes")."""
        return self.encode_text(" " + text)

    def decode_text(self, ids):
        return self.bpe.decode(" ".join(self.dictionary[i] for i in ids if self.is_text(i))).strip()

    def is_text(self, index):
        return self.dictionary.nspecial <= index < self.mask

    def is_blank(self, index):
        """Whether a text token decodes to whitespace only (GPT-2's "Ġ")."""
        return self.is_text(index) and not self.bpe.decode(self.dictionary[index]).strip()

    def byte_value(self, index):
        """None: GPT-2 tokens are not single bytes of SentencePiece's byte fallback."""
        return None
