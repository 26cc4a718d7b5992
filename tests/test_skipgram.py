import functools
import subprocess
import sys

import numba
import numpy as np
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from typer.testing import CliRunner

import bnncompress
import bnncompress.evaluation
from bnncompress.cli import app
from bnncompress.models import (
    SkipGramConfig,
    TrainResult,
    param_store_state,
    read_corpus,
    skipgram,
    skipgram_model,
    train_skipgram,
)
from bnncompress.models._skipgram_torch import TorchTrainer
from bnncompress.models.skipgram import build_vocab, make_pairs
from bnncompress.models.trainer import Trainer, _softplus_inverse, fit

from .conftest import LEE


def test_train_command_writes_a_packable_posterior(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(LEE.read_text().splitlines()[:40]))
    out = tmp_path / "emb.pt"
    r = CliRunner().invoke(
        app,
        [
            "train",
            str(corpus),
            "-o",
            str(out),
            "--dim",
            "8",
            "--vocab-size",
            "200",
            "--epochs",
            "1",
            "--window",
            "2",
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    epoch_line = [line for line in r.output.splitlines() if line.startswith("epoch 1/1: loss/pair ")]
    assert len(epoch_line) == 1 and "pairs/s, ETA 0:00:00" in epoch_line[0]  # stderr is not a terminal here
    loss = epoch_line[0].split("loss/pair ")[1].split(",")[0]
    assert f"loss/pair {loss}," in r.output.splitlines()[-1]  # the final line reports the same figure
    post = bnncompress.read_posterior(out)
    assert post.names == ["word_vectors", "context_vectors"]
    assert post.tensors["word_vectors"].shape == (len(post.vocab), 8) and post.vocab[0] == "the"
    assert np.all(post.tensors["word_vectors"].scale > 0)
    bnncompress.pack(out, tmp_path / "emb.bnc", bits=3.0)
    assert bnncompress.load(tmp_path / "emb.bnc").to_keyed_vectors()["the"].shape == (8,)


def test_frequent_words_are_more_certain(trained):
    scale = trained["guide"].scales.word_vectors.detach().numpy()
    assert scale[:20].mean() < scale[-50:].mean()


def _lee_pairs(vocab_size=60, window=2, seed=0):
    sentences = read_corpus(LEE)[:80]
    vocab, counts = build_vocab(sentences, vocab_size, 2)
    centers, contexts = make_pairs(sentences, vocab, counts, window, 0.0, np.random.default_rng(seed))
    return vocab, counts, centers, contexts


def _trainer(vocab_size, counts, dim=4, negatives=3, init_scale=0.3, seed=0):
    cfg = SkipGramConfig(dim=dim, vocab_size=vocab_size, negatives=negatives, init_scale=init_scale, seed=seed)
    return Trainer(vocab_size, cfg, np.random.default_rng(seed), np.asarray(counts, np.float64))


def test_data_term_gradients_match_torch_autograd():
    vocab, counts, centers, contexts = _lee_pairs()
    t = _trainer(len(vocab), counts)
    center, context = centers[:300], contexts[:300]
    targets = np.concatenate([context[:, None], t.noise(len(center))], axis=1).astype(np.int32)
    data, eps, (gw, gc) = t._data_term(center, targets, len(centers))
    w_rows = t.rows["word_vectors"][: len(eps["word_vectors"])].copy()
    c_rows = t.rows["context_vectors"][: len(eps["context_vectors"])].copy()
    w_slot, c_slot = t.slot["word_vectors"][center], t.slot["context_vectors"][targets]
    t._untouch(eps)
    sampled = {
        site: torch.tensor(t.loc[site][rows] + t.scale[site][rows] * eps[site], requires_grad=True)
        for site, rows in (("word_vectors", w_rows), ("context_vectors", c_rows))
    }
    words, ctx = sampled["word_vectors"], sampled["context_vectors"]
    logits = (words[torch.from_numpy(w_slot).long()][:, None, :] * ctx[torch.from_numpy(c_slot).long()]).sum(-1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
    loss = loss * len(centers) / len(center)
    loss.backward()
    assert data == pytest.approx(loss.item(), rel=1e-4)
    np.testing.assert_allclose(gw[0][: len(w_rows)], words.grad.numpy(), rtol=2e-4, atol=1e-3)
    np.testing.assert_allclose(gc[0][: len(c_rows)], ctx.grad.numpy(), rtol=2e-4, atol=1e-3)


def test_elbo_estimate_agrees_with_pyro_trace_elbo():
    """The trainer's estimate (touched rows only, KL analytic) and Pyro's Trace_ELBO on the Pyro
    model + AutoNormal at the same parameters estimate the same negative ELBO."""
    vocab, counts, centers, contexts = _lee_pairs()
    v, n = len(vocab), len(centers)
    t = _trainer(v, counts)
    batch = np.random.default_rng(1).choice(n, 200, replace=False)
    noise = t.noise(len(batch)).astype(np.int32)
    ours = np.array([t.negative_elbo(centers[batch], contexts[batch], noise, n) for _ in range(400)])

    params = {site: (loc, _softplus_inverse(rho)) for site, (loc, rho) in t.posterior().items()}
    state = param_store_state(TrainResult(params, vocab, counts))
    pyro.clear_param_store()
    pyro.get_param_store().set_state(state)
    pyro.set_rng_seed(0)
    model = skipgram_model(v, t.config.dim, n, t.config.negatives)
    guide = AutoNormal(model)
    args = [torch.from_numpy(np.asarray(a, np.int64)) for a in (centers[batch], contexts[batch], noise, batch)]
    elbo = Trace_ELBO()
    theirs = np.array([elbo.loss(model, guide, *args) / n for _ in range(400)])
    pyro.clear_param_store()
    se = np.sqrt(ours.var() / len(ours) + theirs.var() / len(theirs))
    assert abs(ours.mean() - theirs.mean()) < 4 * se, (ours.mean(), theirs.mean(), se)


def test_training_lowers_the_loss_and_does_not_depend_on_the_thread_count():
    sentences = read_corpus(LEE)[:150]
    cfg = SkipGramConfig(dim=8, vocab_size=300, window=2, negatives=3, epochs=3, batch_size=256, seed=3)
    numba.set_num_threads(1)
    one = train_skipgram(sentences, cfg)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    many = train_skipgram(sentences, cfg)
    assert one.losses[-1] < one.losses[0]
    for site in ("word_vectors", "context_vectors"):
        for a, b in zip(one.params[site], many.params[site]):
            np.testing.assert_array_equal(a, b)


def test_init_vectors_keep_the_means_and_fit_the_scales():
    sentences = read_corpus(LEE)[:150]
    rng = np.random.default_rng(0)
    words = sorted({w for s in sentences for w in s})
    pretrained = {w: rng.standard_normal(6).astype(np.float32) for w in words[::2]}  # half the words
    cfg = SkipGramConfig(dim=6, vocab_size=300, window=2, epochs=2, batch_size=256, init_vectors=pretrained)
    kept = train_skipgram(sentences, cfg)
    assert set(kept.vocab) <= set(pretrained)
    loc, raw = kept.params["word_vectors"]
    np.testing.assert_array_equal(loc, np.stack([pretrained[w] for w in kept.vocab]))
    assert np.ptp(raw) > 0.1  # the scales moved away from init_scale, per word
    cfg.refine_means = True
    refined = train_skipgram(sentences, cfg)
    assert not np.array_equal(refined.params["word_vectors"][0], loc)


def test_train_command_init_from_word2vec_text(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(LEE.read_text().splitlines()[:40]))
    sentences = read_corpus(corpus)
    words = sorted({w for s in sentences for w in s})[:150]
    vectors = tmp_path / "vectors.txt"
    rng = np.random.default_rng(0)
    lines = [f"{w} " + " ".join(f"{x:.4f}" for x in rng.standard_normal(5)) for w in words]
    vectors.write_text(f"{len(words)} 5\n" + "\n".join(lines) + "\n")
    out = tmp_path / "post.pt"
    args = ["train", str(corpus), "-o", str(out), "--init", str(vectors), "--epochs", "1", "--window", "2"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    post = bnncompress.read_posterior(out)
    kv = bnncompress.evaluation.read_word_vectors(vectors)
    np.testing.assert_allclose(post.tensors["word_vectors"].loc, kv[post.vocab], rtol=1e-6)
    again = CliRunner().invoke(app, args + ["--dim", "7"])
    assert again.exit_code == 2 and "already exists" in again.output
    wrong = CliRunner().invoke(app, args + ["--dim", "7", "--force"])
    assert wrong.exit_code == 2 and "--dim 7 differs" in wrong.output


def test_torch_trainer_for_gpus_fits_like_the_cpu_trainer():
    """The ``device="cuda"`` trainer, run on the CPU: same estimator, so the same losses within noise."""
    sentences = read_corpus(LEE)[:150]
    cfg = SkipGramConfig(dim=8, vocab_size=300, window=2, negatives=3, epochs=4, batch_size=256, lr_decay=True)
    vocab, counts = build_vocab(sentences, cfg.vocab_size, cfg.min_count)
    centers, contexts = make_pairs(sentences, vocab, counts, cfg.window, cfg.subsample, np.random.default_rng(0))
    losses = {}
    for name, make in (("cpu", Trainer), ("torch", functools.partial(TorchTrainer, device="cpu"))):
        rng = np.random.default_rng(0)
        trainer = make(len(vocab), cfg, rng, np.asarray(counts, np.float64))
        losses[name], _ = fit(trainer, centers, contexts, cfg, rng, None)
        loc, rho = trainer.posterior()["word_vectors"]
        assert loc.dtype == rho.dtype == np.float32 and loc.shape == (len(vocab), 8)
    assert losses["torch"][-1] < losses["torch"][0]
    assert losses["torch"][-1] == pytest.approx(losses["cpu"][-1], rel=0.02)


def test_counter_based_normals_are_standard_normal_and_do_not_depend_on_threads():
    """eps of the fused sampler: N(0, 1) (ziggurat over a hash of key, row, column), a function of the
    key and row only, so the same for any thread count and any set of rows drawn with it."""
    from scipy import stats

    from bnncompress.models import _skipgram_kernels as k

    rows = np.arange(3000, dtype=np.int64)
    numba.set_num_threads(1)
    one = k.standard_normals(np.uint64(7), rows, 100)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    two = k.standard_normals(np.uint64(7), rows, 100)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(k.standard_normals(np.uint64(7), rows[[5, 2]], 100), one[[5, 2]])
    assert not np.array_equal(k.standard_normals(np.uint64(8), rows, 100), one)
    x = one.ravel()
    assert stats.kstest(x, "norm").pvalue > 1e-3
    assert abs(x.mean()) < 5 / np.sqrt(len(x)) and abs(x.std() - 1) < 5 / np.sqrt(2 * len(x))
    assert 0.5 < np.mean(np.abs(x) > 3.5) / (2 * stats.norm.sf(3.5)) < 1.5  # the tail, not just the layers


def test_sampled_rows_use_the_drawn_eps_and_scales_track_exp_rho():
    """sample_rows returns its eps (for the rho gradient) and loc + scale * eps; the Adam pass's
    polynomial update of scale keeps it equal to exp(rho) to float32 rounding between exact refreshes."""
    from bnncompress.models import _skipgram_kernels as k

    vocab, counts, centers, contexts = _lee_pairs()
    t = _trainer(len(vocab), counts, dim=8, init_scale=0.05)
    loc, scale, rows = t.loc["word_vectors"], t.scale["word_vectors"], np.array([3, 0, 7], np.int32)
    eps, out = np.empty((3, 8), np.float32), np.empty((3, 8), np.float32)
    k.sample_rows(loc, scale, rows, np.uint64(11), eps, out)
    np.testing.assert_array_equal(eps, k.standard_normals(np.uint64(11), rows.astype(np.int64), 8).astype(np.float32))
    np.testing.assert_allclose(out, loc[rows] + scale[rows] * eps, rtol=1e-6)
    for start in range(0, 63 * 64, 64):  # 63 steps: no exact refresh (every 64th step)
        t.step(centers[start : start + 64], contexts[start : start + 64], len(centers), 0.02)
    for site in ("word_vectors", "context_vectors"):
        assert not np.allclose(t.rho[site], np.log(0.05))
        np.testing.assert_allclose(t.scale[site], np.exp(t.rho[site]), rtol=1e-5)  # 64 roundings at most


def test_tokenize_matches_gensims_tokenize_without_importing_it():
    """The corpus reader's tokens are gensim's (``tokenize(line, lowercase=True)``), on the Lee corpus
    and on digits, underscores, accents, non-Latin scripts and case folding; reading needs no gensim."""
    from gensim.utils import tokenize as gensim_tokenize

    lines = LEE.read_text(encoding="utf-8").splitlines() + [
        "Ünïcode café naïve ½ ² 3rd x²y",
        "ΑΒΓ δ ε123ζ",
        "tab\there_under__score __ 12_34",
        "日本語のテキスト",
        "İstanbul ǅ ﬁne",
    ]
    assert all(skipgram.tokenize(line) == list(gensim_tokenize(line, lowercase=True)) for line in lines)
    code = "import sys, bnncompress.models as m; m.read_corpus(sys.argv[1]); print('gensim' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code, str(LEE)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
