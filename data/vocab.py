"""The vocabulary: SentencePiece text pieces in a fairseq Dictionary, then the location tokens.

The dictionary file lists the text pieces first and the special tokens of
``geometry.codec.special_tokens`` last, in their fixed order, so a bin or time
index maps to a dictionary id by one addition.
"""
import hashlib
import os
import re

import numpy as np
import sentencepiece as spm
from fairseq.data import Dictionary

from geometry.codec import IE_TOKENS, IMAGE_TOKENS, POLY, bin_token, special_tokens, time_token
from utils.files import atomic_open

SPM_FILE = "spm.model"
DICT_FILE = "dict.txt"


class MissingVocabularyError(FileNotFoundError):
    """A vocabulary folder without the files preprocess/build_vocab.py writes."""


class SpecialTokens:
    """Locations and structure as dictionary ids: ``num_bins`` box coordinates from ``first_bin``,
    ``num_time_bins`` time bins from ``first_time``, ``poly`` and the IE tokens; and how sequences
    start: ``source_prefix`` before each source, ``decoder_start`` first in the decoder."""
    first_bin: int
    num_bins: int
    first_time: int
    num_time_bins: int
    poly: int
    _ie: dict  # IE token name without brackets -> id (unk where the dictionary lacks it)
    source_prefix = ()

    @property
    def decoder_start(self):
        return self.dictionary.eos()  # fairseq's convention

    def encode_output(self, text):
        """Dictionary ids of a text the decoder produces (a caption, an answer)."""
        return self.encode_text(text)

    def encode_outputs(self, texts):
        """``encode_output`` of each text."""
        return [self.encode_output(text) for text in texts]

    def bin_ids(self, bins):
        return [self.first_bin + int(b) for b in bins]

    def to_bin(self, index):
        """The bin of a dictionary id, or None if it is not a bin token."""
        b = index - self.first_bin
        return b if 0 <= b < self.num_bins else None

    def ie(self, name):
        """The id of an IE structure token, by name with or without brackets: "ent" or "<ent>"."""
        key = name[1:-1] if name.startswith("<") and name.endswith(">") else name
        if key not in self._ie:
            raise KeyError(f"no IE token {name!r}; the IE tokens are {', '.join(IE_TOKENS)}")
        index = self._ie[key]
        if index == self.dictionary.unk():
            raise ValueError(f"dictionary has no <{key}>: rebuild it with preprocess/build_vocab.py")
        return index

    def ie_ids(self):
        """{name: id} of every IE structure token ("ent", "rel", ..., "is")."""
        return {name: self.ie(name) for name in self._ie}

    def image_id(self, k):
        """The id of the token of image ``k`` (0-based) of a row, ``<image_{k + 1}>``: its marker in a prompt,
        and the image-index token before a region on a chosen image."""
        if not 0 <= k < len(IMAGE_TOKENS):
            raise ValueError(f"image {k + 1}: a row holds at most {len(IMAGE_TOKENS)} images")
        index = self.dictionary.index(IMAGE_TOKENS[k])
        if index == self.dictionary.unk():
            raise ValueError(f"dictionary has no {IMAGE_TOKENS[k]}: rebuild it with preprocess/build_vocab.py")
        return index

    def to_image_index(self, index):
        """The 0-based image of an image token id, or None if it is not one."""
        token = self.dictionary[index] if 0 <= index < len(self.dictionary) else None
        return IMAGE_TOKENS.index(token) if token in IMAGE_TOKENS else None

    def time_ids(self, bins):
        return [self.first_time + int(b) for b in bins]

    def to_time_bin(self, index):
        b = index - self.first_time
        return b if 0 <= b < self.num_time_bins else None


class Vocabulary(SpecialTokens):
    def __init__(self, vocab_dir, num_bins=1000, num_time_bins=100):
        missing = [name for name in (SPM_FILE, DICT_FILE) if not os.path.isfile(os.path.join(vocab_dir, name))]
        if missing:
            raise MissingVocabularyError(
                f"vocabulary folder {vocab_dir} (from {os.getcwd()}) has no {' or '.join(missing)}: point --vocab-dir "
                "(predict.py: --task-option vocab_dir=...) at the folder preprocess/build_vocab.py wrote")
        self.sp = spm.SentencePieceProcessor(model_file=os.path.join(vocab_dir, SPM_FILE))
        self.fingerprint = fingerprint(vocab_dir)
        self.dictionary = Dictionary.load(os.path.join(vocab_dir, DICT_FILE))
        self.num_bins, self.num_time_bins = num_bins, num_time_bins
        self.first_bin = self._require(bin_token(0))
        self._require(bin_token(num_bins - 1))
        self.first_time = self._require(time_token(0))
        self._require(time_token(num_time_bins - 1))
        self.poly = self._require(POLY)
        # looked up now, required only where used: ``ie`` names a vocabulary without them
        self._ie = {token[1:-1]: self.dictionary.index(token) for token in IE_TOKENS}
        self._blank = self._bytes = None

    def _require(self, token):
        index = self.dictionary.index(token)
        if index == self.dictionary.unk():
            raise ValueError(f"dictionary has no {token}: rebuild it with preprocess/build_vocab.py "
                             f"--num-bins {self.num_bins} --num-time-bins {self.num_time_bins}")
        return index

    def encode_text(self, text):
        return [self.dictionary.index(p) for p in self.sp.encode(text, out_type=str)]

    def encode_outputs(self, texts):
        """``encode_output`` of many texts in one SentencePiece call."""
        table = np.array([self.dictionary.index(self.sp.id_to_piece(i)) for i in range(self.sp.get_piece_size())],
                         dtype=np.int64)
        return [table[ids].tolist() for ids in self.sp.encode(list(texts), out_type=int)]

    def decode_text(self, ids):
        pieces = [self.dictionary[i] for i in ids if self.is_text(i)]
        return self.sp.decode_pieces(pieces).strip()

    def is_text(self, index):
        return self.dictionary.nspecial <= index < self.first_bin

    def is_blank(self, index):
        """Whether a text piece decodes to whitespace only (SentencePiece's bare "▁", a
        whitespace byte): a mention or label cannot start with one."""
        if self._blank is None:
            self._blank = frozenset(i for i in range(self.dictionary.nspecial, self.first_bin)
                                    if _blank_piece(self.dictionary[i]))
        return index in self._blank

    def byte_value(self, index):
        """The byte of a byte-fallback piece ("<0xC3>" -> 0xC3), or None for any other id."""
        if self._bytes is None:
            self._bytes = {i: int(m.group(1), 16) for i in range(self.dictionary.nspecial, self.first_bin)
                           for m in [_BYTE_PIECE.fullmatch(self.dictionary[i])] if m}
        return self._bytes.get(index)

def fingerprint(vocab_dir, names=(SPM_FILE, DICT_FILE)):
    """The first 16 hex digits of the SHA-256 of the vocabulary's files: two vocabularies of one size
    that map pieces to other ids differ in it."""
    digest = hashlib.sha256()
    for name in names:
        with open(os.path.join(vocab_dir, name), "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()[:16]


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _blank_piece(piece):
    byte = _BYTE_PIECE.fullmatch(piece)
    if byte:
        value = int(byte.group(1), 16)
        return value < 0x80 and chr(value).isspace()  # higher bytes are parts of a character
    return not piece.replace("\u2581", " ").strip()


def write_dictionary(pieces, path, num_bins, num_time_bins):
    """Write a fairseq dict file: text pieces, then the special tokens in their fixed order."""
    with atomic_open(path) as f:
        f.writelines(f"{token} 1\n" for token in list(pieces) + special_tokens(num_bins, num_time_bins))
