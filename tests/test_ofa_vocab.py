"""OFA's GPT-2 BPE vocabulary on small BPE files made here, and its dictionary order against OFA's checkpoint."""
import json
import os
import shutil

import pytest
from fairseq.data.encoders.gpt2_bpe_utils import bytes_to_unicode

from conftest import SHARED_DATA
from data.ofa_vocab import OFAVocabulary

MERGES = [("Ġ", "w"), ("Ġw", "h"), ("a", "t"), ("Ġwh", "at"), ("Ġ", "a"), ("Ġa", "t")]


def write_bpe_files(folder, dict_lines=None):
    """encoder.json (the 256 byte symbols, then one token per merge), vocab.bpe, and a dict.txt that lists
    the GPT-2 ids in an order of its own, so that dictionary ids differ from GPT-2 ids."""
    symbols = list(bytes_to_unicode().values()) + ["".join(pair) for pair in MERGES]
    with open(folder / "encoder.json", "w") as f:
        json.dump({symbol: i for i, symbol in enumerate(symbols)}, f)
    with open(folder / "vocab.bpe", "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    if dict_lines is None:
        dict_lines = [f"{i} {1000 - i}" for i in reversed(range(len(symbols)))]
    with open(folder / "dict.txt", "w") as f:
        f.write("\n".join(dict_lines) + "\n")
    return len(symbols)


@pytest.fixture
def bpe_dir(tmp_path):
    write_bpe_files(tmp_path)
    return tmp_path


def test_text_round_trips_through_gpt2_ids_and_dict_order(bpe_dir):
    vocab = OFAVocabulary(str(bpe_dir), num_bins=10, code_dict_size=5)
    ids = vocab.encode_text(" what at a cat")
    words = [vocab.dictionary[i] for i in ids]
    symbols = json.load(open(bpe_dir / "encoder.json"))
    # " at": the merge "a t" ranks before "Ġ a", and no "Ġ at" merge exists
    assert words == [str(symbols[s]) for s in ("Ġwhat", "Ġ", "at", "Ġa", "Ġ", "c", "at")]
    assert ids[0] == 4 + (len(symbols) - 1 - symbols["Ġwhat"])  # dict.txt lists GPT-2 ids last to first
    assert vocab.decode_text(ids + vocab.bin_ids([3]) + [vocab.mask, vocab.dictionary.eos()]) == "what at a cat"


def test_dictionary_order_is_ofas(bpe_dir):
    count = 256 + len(MERGES)
    vocab = OFAVocabulary(str(bpe_dir), num_bins=10, code_dict_size=5)
    assert vocab.mask == 4 + count and vocab.dictionary[vocab.mask] == "<mask>"
    assert vocab.first_code == vocab.mask + 1 and vocab.dictionary[vocab.first_code + 4] == "<code_4>"
    assert vocab.first_bin == vocab.first_code + 5 == len(vocab.dictionary) - 10
    assert vocab.dictionary[vocab.bin_ids([9])[0]] == "<bin_9>" and vocab.to_bin(vocab.first_bin + 7) == 7
    assert not vocab.is_text(vocab.mask) and vocab.is_text(4) and not vocab.is_text(vocab.dictionary.eos())


def test_oracle_dict_gives_the_checkpoints_ids(tmp_path):
    oracle = os.path.join(SHARED_DATA, "ofa-oracle")
    if not os.path.isdir(oracle):
        pytest.skip(f"the OFA oracle fixture {oracle} is absent")
    write_bpe_files(tmp_path)
    shutil.copy(os.path.join(oracle, "dict.txt"), tmp_path / "dict.txt")
    with open(os.path.join(oracle, "meta.json")) as f:
        ids = json.load(f)["vocab"]
    vocab = OFAVocabulary(str(tmp_path))
    assert len(vocab.dictionary) == ids["size"]
    assert (vocab.mask, vocab.first_code, vocab.first_bin) == (ids["<mask>"], ids["codes"][0], ids["bins"][0])
    assert vocab.dictionary[ids["ordinary"][0]] == "1000" and vocab.dictionary[ids["codes"][1]] == "<code_8191>"


def test_missing_bpe_files_are_named(tmp_path):
    write_bpe_files(tmp_path)
    os.remove(tmp_path / "encoder.json")
    os.remove(tmp_path / "vocab.bpe")
    with pytest.raises(FileNotFoundError, match="missing: encoder.json, vocab.bpe"):
        OFAVocabulary(str(tmp_path))
