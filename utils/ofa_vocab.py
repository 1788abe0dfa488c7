"""OFA's vocabulary: GPT-2 BPE (fairseq's ``gpt2`` bpe) over the ``dict.txt`` OFA ships, then its own tokens.

The dictionary is built as OFA's task builds it, so token ids match the
embeddings of OFA's checkpoints: fairseq's four specials, the lines of
``dict.txt`` (GPT-2 token ids written as words), ``<mask>``, ``<code_0..>``
(image codes) and ``<bin_0..>`` (box coordinates).
"""
import os

from fairseq.data import Dictionary
from fairseq.data.encoders.gpt2_bpe import GPT2BPE, GPT2BPEConfig

from utils.codec import bin_token
from utils.vocab import BinTokens, fingerprint

BPE_FILES = ("dict.txt", "encoder.json", "vocab.bpe")
MASK = "<mask>"


def code_token(i):
    return f"<code_{i}>"


class MissingBPEFilesError(FileNotFoundError):
    """A folder without the BPE files OFA ships beside its checkpoints."""


class OFAVocabulary(BinTokens):
    def __init__(self, bpe_dir, num_bins=1000, code_dict_size=8192):
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
