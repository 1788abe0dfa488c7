"""The token trie: masks equal a plain reference trie's, under fairseq's beam reordering too."""
import random

import pytest
import torch

from decoding.constraints import Constraint
from decoding.trie import TokenTrie

EOS, VOCAB = 2, 40


def reference_children(sequences):
    children = {}
    for sequence in sequences:
        for j in range(len(sequence)):
            children.setdefault(tuple(sequence[:j]), set()).add(sequence[j])
    return children


def reference_mask(children, prefix):
    mask = torch.zeros(VOCAB, dtype=torch.bool)
    tokens = children.get(tuple(prefix))
    mask[sorted(tokens) if tokens else [EOS]] = True
    return mask


def random_sequences(rng, count, alphabet=range(3, 9), longest=6):
    return [[rng.choice(list(alphabet)) for _ in range(rng.randint(1, longest))] + [EOS] for _ in range(count)]


def test_small_trie_has_one_node_per_distinct_prefix_and_hand_checked_masks():
    sequences = [[5, 6, EOS], [5, 7, EOS], [5, 6, 8, EOS], [5, 6, EOS]]
    trie = TokenTrie(sequences, EOS, VOCAB)
    # root, 5, 5-6, 5-7, 5-6-EOS, 5-6-8, 5-7-EOS, 5-6-8-EOS
    assert trie.num_nodes == 8 and trie.max_length == 4
    prefixes = torch.tensor([[5, 6], [5, 7], [6, 6], [5, 6]])
    masks = trie.allowed(prefixes, torch.arange(4))
    assert [m.nonzero().squeeze(1).tolist() for m in masks] == [[EOS, 8], [EOS], [EOS], [EOS, 8]]
    assert trie.allowed(torch.zeros(3, 0, dtype=torch.long), None).nonzero()[:, 1].tolist() == [5, 5, 5]
    after_end = trie.allowed(torch.tensor([[5, 7, EOS]]), None)
    assert after_end.nonzero().tolist() == [[0, EOS]]


def test_masks_equal_the_reference_trie_inside_and_outside():
    rng = random.Random(0)
    sequences = random_sequences(rng, 3000)
    trie = TokenTrie(sequences, EOS, VOCAB, memoise=False)
    children = reference_children(sequences)
    for t in range(8):
        inside = [s[:t] for s in sequences if len(s) >= t][:200]
        outside = [[rng.randrange(VOCAB) for _ in range(t)] for _ in range(50)]
        prefixes = inside + outside
        got = trie.allowed(torch.tensor(prefixes, dtype=torch.long).view(len(prefixes), t), None)
        assert torch.equal(got, torch.stack([reference_mask(children, p) for p in prefixes])), t


def test_lookup_gives_the_first_of_identical_sequences_and_none_for_prefixes():
    sequences = [[5, 6, EOS], [9, EOS], [5, 6, 8, EOS], [5, 6, EOS], [9, EOS]]
    trie = TokenTrie(sequences, EOS, VOCAB)
    assert trie.lookup([5, 6]) == 0 and trie.lookup([5, 6, EOS]) == 0
    assert trie.lookup([9]) == 1 and trie.lookup([5, 6, 8]) == 2
    assert trie.lookup([5]) is None and trie.lookup([5, 6, 8, 8]) is None and trie.lookup([]) is None
    assert trie.lookup([VOCAB + 3]) is None


def test_memoised_walk_follows_beam_reordering_and_in_place_buffer_rewrites():
    """fairseq hands the constraint a view of its token buffer, reorders hypotheses between steps and
    rewrites the buffer in place: the memoised answer must still be a function of the prefix alone."""
    rng = random.Random(1)
    torch.manual_seed(1)
    sequences = random_sequences(rng, 500, alphabet=range(3, 7), longest=8)
    memoised, plain = TokenTrie(sequences, EOS, VOCAB, memoise=True), TokenTrie(sequences, EOS, VOCAB, memoise=False)
    hypotheses = 12
    walked_from_root = []
    walk = memoised._walk_from_root
    memoised._walk_from_root = lambda prefix, arrays: walked_from_root.append(len(prefix)) or walk(prefix, arrays)
    buffer = torch.full((hypotheses, 16), EOS, dtype=torch.long)
    for step in range(15):  # past the deepest sequence too: hypotheses off the trie go on (EOS only)
        view = buffer[:, :step]
        walked_from_root.clear()
        got = memoised.allowed(view, None)
        assert torch.equal(got, plain.allowed(view.clone(), None)), step
        if step >= 4:
            assert not walked_from_root, step  # every prefix extended a remembered one
        # choose next tokens (mostly allowed, sometimes not), then reorder rows as beam search does
        choice = torch.multinomial(got.float() + 0.02, 1).squeeze(1)
        buffer[:, step] = choice
        order = torch.randint(0, hypotheses, (hypotheses,))
        buffer[:, : step + 1] = buffer[order, : step + 1]


def test_training_masks_equal_the_stepwise_masks_and_fall_back_off_the_trie():
    rng = random.Random(2)
    sequences = random_sequences(rng, 300)
    trie = TokenTrie(sequences, EOS, VOCAB)
    pad = 1
    targets = [sequences[i] for i in range(0, 300, 37)]
    width = max(map(len, targets))
    target = torch.tensor([t + [pad] * (width - len(t)) for t in targets])
    fast = trie.training_masks(target)
    stepwise = Constraint.training_masks(trie, target)
    real = target.ne(pad)
    assert torch.equal(fast[real], stepwise[real])
    # a target outside the trie: the tokens the trie does not allow see the full vocabulary, so the loss
    # stays finite; the final EOS is allowed (a prefix off the trie allows only EOS)
    outside = torch.tensor([[targets[0][0], 39, 38, EOS]])
    masks = trie.training_masks(outside)
    assert torch.equal(masks[0, 0], Constraint.training_masks(trie, outside)[0, 0])
    assert masks[0, 1:3].all() and masks[0, 3].nonzero().squeeze(1).tolist() == [EOS]


@pytest.mark.parametrize("sequences, message", [
    ([], "at least one"),
    ([[5, 6]], "does not end in EOS"),
    ([[5, EOS, 6, EOS]], "before its end"),
    ([[5, VOCAB, EOS]], "outside"),
    ([[5, EOS], []], "sequence 1 is empty"),
])
def test_bad_sequences_are_refused(sequences, message):
    with pytest.raises(ValueError, match=message):
        TokenTrie(sequences, EOS, VOCAB)


def test_colliding_row_hashes_cannot_give_a_wrong_node():
    rng = random.Random(3)
    sequences = random_sequences(rng, 400, longest=9)
    memoised, plain = TokenTrie(sequences, EOS, VOCAB), TokenTrie(sequences, EOS, VOCAB, memoise=False)
    memoised._hash_weights = torch.zeros(32, dtype=torch.long)  # every row hashes to 0
    prefixes = torch.tensor([s[:6] for s in sequences if len(s) >= 6][:40])
    memoised.allowed(prefixes[:, :5].flip(0), None)
    assert torch.equal(memoised.allowed(prefixes, None), plain.allowed(prefixes, None))
