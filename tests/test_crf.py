"""The CRF layer against independent oracles: pytorch-crf (same parameters) and brute-force
enumeration of every tag path on tiny cases."""
from __future__ import annotations

import itertools

import pytest
import torch
import torchcrf
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlearn import CRF
from seqlearn.crf import log_partition, neg_log_likelihood
from seqlearn.errors import ConfigError, DataError
from seqlearn.tag_schemes import find_violation

torch.set_num_threads(1)

BIO_TAGS = ["<pad>", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
SCHEME_TAGS = {
    "BIO": BIO_TAGS,
    "IOB1": BIO_TAGS,
    "BIOUL": ["<pad>", "O", "B-PER", "I-PER", "L-PER", "U-PER", "B-LOC", "I-LOC", "L-LOC", "U-LOC"],
    "BIOES": ["<pad>", "O", "B-PER", "I-PER", "E-PER", "S-PER"],
}


def random_case(batch, time, num_tags, lengths=None, dtype=torch.float64, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    emissions = (torch.randn(batch, time, num_tags, generator=g) * scale).to(dtype)
    tags = torch.randint(num_tags, (batch, time), generator=g)
    if lengths is None:
        lengths = torch.randint(1, time + 1, (batch,), generator=g)
        lengths[0] = time
    mask = torch.arange(time) < torch.as_tensor(lengths).view(-1, 1)
    return emissions, tags, mask


def twin(num_tags, dtype=torch.float64, seed=0, spread=1.0):
    """A seqlearn CRF and a pytorch-crf CRF with the same (non-trivial) parameters."""
    torch.manual_seed(seed)
    ours = CRF(num_tags).to(dtype)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0.0, spread)
    theirs = torchcrf.CRF(num_tags, batch_first=True).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


# -- pytorch-crf ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "token_mean"])
def test_nll_and_gradients_match_pytorch_crf(reduction):
    ours, theirs = twin(5)
    emissions, tags, mask = random_case(6, 7, 5, lengths=[7, 3, 1, 5, 7, 2])
    em_ours = emissions.clone().requires_grad_(True)
    em_theirs = emissions.clone().requires_grad_(True)
    nll = ours(em_ours, tags, mask, reduction=reduction)
    expected = -theirs(em_theirs, tags, mask, reduction=reduction)
    torch.testing.assert_close(nll, expected, rtol=1e-10, atol=1e-10)
    weights = torch.rand(nll.shape, dtype=nll.dtype)  # a non-uniform upstream gradient
    (nll * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(em_ours.grad, em_theirs.grad, rtol=1e-9, atol=1e-10)
    for name in ("transitions", "start_transitions", "end_transitions"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(theirs, name).grad,
                                   rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("scale", [10.0, 200.0])
def test_float32_matches_pytorch_crf_in_float64_on_long_sentences(scale):
    """float32 emissions of size ~10 (and absurd ~200), T=100, K=17: the scaled recursion
    stays accurate."""
    ours, _ = twin(17, dtype=torch.float32, spread=2.0)
    _, theirs64 = twin(17, dtype=torch.float64, spread=2.0)
    theirs64.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    emissions, tags, mask = random_case(8, 100, 17, dtype=torch.float32, scale=scale, seed=3)
    nll = ours(emissions, tags, mask, reduction="none")
    expected = -theirs64(emissions.double(), tags, mask, reduction="none")
    torch.testing.assert_close(nll.double(), expected, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("seed", range(3))
def test_viterbi_matches_pytorch_crf(seed):
    ours, theirs = twin(7, seed=seed)
    emissions, _, mask = random_case(16, 12, 7, seed=seed)
    assert ours.decode(emissions, mask) == theirs.decode(emissions, mask)


def test_state_dict_is_pytorch_crf_compatible():
    ours, theirs = twin(4)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    constrained = CRF(len(BIO_TAGS), scheme="BIO", tag_names=BIO_TAGS)
    assert set(constrained.state_dict()) == set(theirs.state_dict())


def test_token_mean_is_the_summed_nll_over_the_real_tokens():
    """pytorch-crf's token_mean divides by the tokens of the mask: padding does not count."""
    ours, theirs = twin(4)
    emissions, tags, mask = random_case(3, 6, 4, lengths=[6, 2, 1])
    nll = ours(emissions, tags, mask, reduction="token_mean")
    torch.testing.assert_close(nll, -theirs(emissions, tags, mask.byte(), reduction="token_mean"))
    torch.testing.assert_close(nll, ours(emissions, tags, mask, reduction="sum") / 9)


# -- TorchScript ------------------------------------------------------------------------------


def scripted_twin(scheme):
    """A CRF (BIO-constrained or not) with random parameters, and it compiled."""
    torch.manual_seed(1)
    crf = CRF(len(BIO_TAGS), scheme=scheme, tag_names=BIO_TAGS if scheme else None)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_(0.0, 1.0)
    return crf, torch.jit.script(crf)


@pytest.mark.parametrize("scheme", [None, "BIO"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scripted_crf_gives_the_eager_values(scheme, dtype):
    crf, scripted = scripted_twin(scheme)
    crf.to(dtype), scripted.to(dtype)
    emissions, _, mask = random_case(5, 7, len(BIO_TAGS), lengths=[7, 3, 1, 6, 7], dtype=dtype, seed=4)
    tags = torch.tensor(crf.decode(emissions)).to(torch.long)  # gold paths the scheme allows
    for reduction in ("none", "sum", "mean", "token_mean"):
        for m in (mask, None):
            assert torch.equal(scripted(emissions, tags, m, reduction=reduction),
                               crf(emissions, tags, m, reduction=reduction)), (reduction, m)
    for top_k in (1, 3):
        assert scripted.decode(emissions, mask, top_k=top_k) == crf.decode(emissions, mask, top_k=top_k)
        for got, want in zip(scripted.viterbi(emissions, mask, top_k), crf.viterbi(emissions, mask, top_k)):
            assert torch.equal(got, want)
    assert torch.equal(scripted.marginals(emissions, mask), crf.marginals(emissions, mask))
    assert torch.equal(scripted.log_partition(emissions, mask), crf.log_partition(emissions, mask))


def test_scripted_crf_decodes_as_pytorch_crf_after_saving_and_loading(tmp_path):
    ours, theirs = twin(5)
    torch.jit.save(torch.jit.script(ours), str(tmp_path / "crf.pt"))
    loaded = torch.jit.load(str(tmp_path / "crf.pt"))
    emissions, tags, mask = random_case(6, 8, 5, seed=2)
    assert loaded.decode(emissions, mask) == theirs.decode(emissions, mask.byte())
    torch.testing.assert_close(loaded(emissions, tags, mask, reduction="none"),
                               -theirs(emissions, tags, mask.byte(), reduction="none"))


def test_scripted_crf_refuses_what_the_eager_one_refuses():
    _, scripted = scripted_twin("BIO")
    emissions = torch.randn(1, 3, len(BIO_TAGS))
    with pytest.raises(torch.jit.Error, match="row 0 break the BIO scheme at position 1"):
        scripted(emissions, torch.tensor([[1, 3, 3]]))  # O -> I-PER
    with pytest.raises(torch.jit.Error, match="reduction"):
        scripted(emissions, torch.tensor([[1, 1, 1]]), reduction="tokens")
    with pytest.raises(torch.jit.Error, match="prefix mask"):
        scripted.decode(emissions, torch.tensor([[True, False, True]]))


# -- brute force ---------------------------------------------------------------------------


def enumerate_paths(crf, emissions, length, constrained=True):
    """Every tag path of one sequence with its score, as differentiable tensors.

    Forbidden paths (scheme) are left out rather than scored -inf."""
    num_tags = crf.num_tags
    paths = []
    for path in itertools.product(range(num_tags), repeat=length):
        if constrained and crf.scheme and find_violation([crf.tag_names[i] for i in path], crf.scheme) is not None:
            continue
        paths.append(path)
    index = torch.tensor(paths)  # (P, length)
    score = crf.start_transitions[index[:, 0]] + crf.end_transitions[index[:, -1]]
    score = score + emissions[torch.arange(length), index].sum(1)
    score = score + crf.transitions[index[:, :-1], index[:, 1:]].sum(1)
    return index, score


TINY = [(1, 3), (2, 2), (3, 3), (4, 2), (4, 3)]  # (time, num_tags)


@pytest.mark.parametrize("time,num_tags", TINY)
def test_log_partition_marginals_and_gradient_equal_brute_force(time, num_tags):
    crf, _ = twin(num_tags, seed=time)
    lengths = [time, max(1, time - 1), 1][: 3 if time > 1 else 1]
    emissions, tags, mask = random_case(len(lengths), time, num_tags, lengths=lengths, seed=time)
    emissions.requires_grad_(True)
    nll = crf(emissions, tags, mask, reduction="sum")
    grads = torch.autograd.grad(nll, [emissions, *crf.parameters()])

    brute_nll, brute_marginals = 0.0, torch.zeros(emissions.shape, dtype=emissions.dtype)
    for b, n in enumerate(lengths):
        index, score = enumerate_paths(crf, emissions[b], n)
        gold = (index == tags[b, :n]).all(1)
        brute_nll = brute_nll + torch.logsumexp(score, 0) - score[gold].squeeze()
        probs = torch.softmax(score.detach(), 0)
        for t in range(n):
            brute_marginals[b, t].index_add_(0, index[:, t], probs)
    brute_grads = torch.autograd.grad(brute_nll, [emissions, *crf.parameters()])

    torch.testing.assert_close(nll, brute_nll, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, brute_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    marginals = crf.marginals(emissions.detach(), mask)
    torch.testing.assert_close(marginals, brute_marginals, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(marginals.sum(-1), mask.to(marginals.dtype))


@pytest.mark.parametrize("time,num_tags", TINY)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_viterbi_equals_brute_force_ranking(time, num_tags, k):
    crf, _ = twin(num_tags, seed=10 + time)
    lengths = [time, max(1, time - 1), 1]
    emissions, _, mask = random_case(3, time, num_tags, lengths=lengths, seed=time)
    result = crf.viterbi(emissions, mask, top_k=k)
    decoded = crf.decode(emissions, mask, top_k=k)
    for b, n in enumerate(lengths):
        index, score = enumerate_paths(crf, emissions[b], n)
        order = score.detach().argsort(descending=True)[:k]
        want_paths = index[order].tolist()
        paths = decoded[b] if k > 1 else [decoded[b]]
        assert paths == want_paths
        found = len(want_paths)
        torch.testing.assert_close(result.scores[b, :found], score.detach()[order], rtol=1e-12, atol=1e-12)
        assert torch.isneginf(result.scores[b, found:]).all()
        assert (result.tags[b, :found, :n] == index[order]).all()
        assert (result.tags[b, :, n:] == -1).all() and (result.tags[b, found:] == -1).all()


def test_gradcheck():
    """The hand-written backward against finite differences (float64)."""
    torch.manual_seed(0)
    emissions = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(4) < torch.tensor([[4], [2], [1]])
    tags = torch.randint(3, (3, 4))
    params = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in [(3,), (3, 3), (3,)]]
    assert torch.autograd.gradcheck(lambda e, s, t, n: log_partition(e, mask, s, t, n), (emissions, *params))
    assert torch.autograd.gradcheck(lambda e, s, t, n: neg_log_likelihood(e, tags, mask, s, t, n),
                                    (emissions, *params))


# -- constraints ---------------------------------------------------------------------------


@pytest.mark.parametrize("constrain_training", [True, False])
def test_constrained_training_normalizes_over_valid_paths_only(constrain_training):
    tags_ = ["O", "B-X", "I-X"]
    crf = CRF(3, scheme="BIO", tag_names=tags_, constrain_training=constrain_training).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions, _, mask = random_case(2, 4, 3, lengths=[4, 3], seed=5)
    gold = torch.tensor([[1, 2, 0, 1], [0, 1, 2, 0]])  # valid BIO paths
    nll = crf(emissions, gold, mask, reduction="none")
    for b, n in enumerate([4, 3]):
        index, score = enumerate_paths(crf, emissions[b], n, constrained=constrain_training)
        gold_score = score[(index == gold[b, :n]).all(1)].squeeze()
        torch.testing.assert_close(nll[b], torch.logsumexp(score, 0) - gold_score)
        # decoding and marginals are constrained either way
        index, score = enumerate_paths(crf, emissions[b], n, constrained=True)
        assert crf.decode(emissions, mask)[b] == index[score.argmax()].tolist()
    assert crf.marginals(emissions, mask)[:, 0, 2].max() == 0.0  # I-X cannot start a sentence


def test_gold_path_that_breaks_the_scheme_is_a_data_error():
    crf = CRF(3, scheme="BIO", tag_names=["O", "B-X", "I-X"])
    emissions = torch.randn(2, 3, 3)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    with pytest.raises(DataError, match=r"row 1 .* position 1 \(O -> I-X\)"):
        crf(emissions, torch.tensor([[1, 2, 0], [0, 2, 2]]), mask)
    # the same tags past the end of the sequence are ignored
    crf(emissions, torch.tensor([[1, 2, 0], [0, 1, 2]]), mask).backward()
    assert CRF(3, scheme="BIO", tag_names=["O", "B-X", "I-X"], constrain_training=False)(
        emissions, torch.tensor([[1, 2, 0], [0, 2, 2]]), mask).isfinite()


@settings(max_examples=40, deadline=None)
@given(scheme=st.sampled_from(sorted(SCHEME_TAGS)), batch=st.integers(1, 4), time=st.integers(1, 8),
       scale=st.sampled_from([1.0, 10.0, 50.0]), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_decoded_paths_never_break_the_scheme(scheme, batch, time, scale, seed, data):
    tag_names = SCHEME_TAGS[scheme]
    lengths = data.draw(st.lists(st.integers(1, time), min_size=batch, max_size=batch))
    crf = CRF(len(tag_names), scheme=scheme, tag_names=tag_names)
    emissions, _, mask = random_case(batch, time, len(tag_names), lengths=lengths, dtype=torch.float32,
                                     scale=scale, seed=seed)
    for paths in crf.decode(emissions, mask, top_k=3):
        assert paths, "a sequence always has a valid path"
        for path in paths:
            assert find_violation([tag_names[i] for i in path], scheme) is None, path
    marginals = crf.marginals(emissions, mask)
    assert torch.isfinite(marginals).all()
    torch.testing.assert_close(marginals.sum(-1), mask.float())
    assert marginals[..., 0].max() == 0.0  # <pad> is never predicted


def test_tag_vocab_is_accepted_as_tag_names():
    from seqlearn.vocab import Vocab

    vocab = Vocab(["O", "B-PER", "I-PER"], specials=("<pad>",))
    crf = CRF(len(vocab), scheme="iob2", tag_names=vocab)
    assert crf.tag_names == ("<pad>", "O", "B-PER", "I-PER") and crf.scheme == "BIO"
    assert not crf.allowed_start[3] and crf.allowed_transitions[2, 3] and not crf.allowed_transitions[1, 3]


# -- masks, padding and errors -------------------------------------------------------------


def test_padding_content_is_ignored():
    crf, _ = twin(4)
    emissions, tags, mask = random_case(3, 5, 4, lengths=[5, 2, 3])
    noisy = emissions.masked_fill(~mask.unsqueeze(-1), float("nan")).requires_grad_(True)
    clean = emissions.clone().requires_grad_(True)
    junk_tags = tags.masked_fill(~mask, -100)
    nll_noisy = crf(noisy, junk_tags, mask, reduction="sum")
    nll_clean = crf(clean, tags, mask, reduction="sum")
    torch.testing.assert_close(nll_noisy, nll_clean)
    nll_noisy.backward()
    nll_clean.backward()
    torch.testing.assert_close(noisy.grad, clean.grad)
    assert (noisy.grad[~mask] == 0).all()
    assert crf.decode(noisy.detach(), mask) == crf.decode(emissions, mask)
    full = torch.ones_like(mask)
    torch.testing.assert_close(crf(emissions, tags, None), crf(emissions, tags, full))


@pytest.mark.parametrize("mask,match", [
    ([[True, False, True]], "prefix mask"),
    ([[False, False, False]], "first column"),
    ([[True, True]], "shape"),
])
def test_bad_masks_are_config_errors(mask, match):
    crf = CRF(3)
    emissions = torch.randn(1, 3, 3)
    with pytest.raises(ConfigError, match=match):
        crf(emissions, torch.zeros(1, 3, dtype=torch.long), torch.tensor(mask))
    with pytest.raises(ConfigError, match=match):
        crf.decode(emissions, torch.tensor(mask))


def test_bad_arguments_are_config_errors():
    crf = CRF(3)
    emissions, tags = torch.randn(2, 4, 3), torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="reduction"):
        crf(emissions, tags, reduction="tokens")
    with pytest.raises(ConfigError, match="3 tags but emissions have 4"):
        crf(torch.randn(2, 4, 4), tags)
    with pytest.raises(ConfigError, match=r"in 0\.\.2"):
        crf(emissions, tags + 3)
    with pytest.raises(ConfigError, match="top_k"):
        crf.decode(emissions, top_k=0)
    with pytest.raises(ConfigError, match="needs tag_names"):
        CRF(3, scheme="BIO")
    with pytest.raises(ConfigError, match="2 tag names"):
        CRF(3, scheme="BIO", tag_names=["O", "B-X"])
    with pytest.raises(ConfigError, match="unknown tag scheme"):
        CRF(3, scheme="IOE", tag_names=["O", "B-X", "I-X"])


@pytest.mark.parametrize("shape", [(1, 4, 3), (3, 1, 3), (3, 4, 3)])
def test_emissions_are_never_modified(shape):
    """The recursions work in place on their own float64 copy, even when a float64 input
    with batch or time 1 would make a transposed view contiguous."""
    crf, _ = twin(3)
    emissions = torch.randn(shape, dtype=torch.float64)
    copy = emissions.clone()
    tags = torch.zeros(shape[:2], dtype=torch.long)
    crf(emissions.requires_grad_(True), tags).backward()
    crf.decode(emissions.detach(), top_k=2)
    crf.marginals(emissions.detach())
    assert torch.equal(emissions.detach(), copy)
