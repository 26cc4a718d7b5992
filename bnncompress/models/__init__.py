"""Bayesian models whose posteriors bnncompress packs (the skip-gram word-embedding model)."""

from .skipgram import SkipGramConfig, TrainResult, read_corpus, save_posterior, train_skipgram

__all__ = ["SkipGramConfig", "TrainResult", "read_corpus", "save_posterior", "train_skipgram"]
