"""Bayesian models whose posteriors bnncompress packs (the skip-gram word-embedding model)."""

from .skipgram import (
    SkipGramConfig,
    TrainCallback,
    TrainProgress,
    TrainResult,
    check_corpus_path,
    param_store_state,
    read_corpus,
    save_posterior,
    skipgram_model,
)
from .trainer import train_skipgram

__all__ = [
    "SkipGramConfig",
    "TrainCallback",
    "TrainProgress",
    "TrainResult",
    "check_corpus_path",
    "param_store_state",
    "read_corpus",
    "save_posterior",
    "skipgram_model",
    "train_skipgram",
]
