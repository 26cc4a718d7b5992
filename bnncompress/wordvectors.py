"""Which tensor holds the word vectors: the one rule the loader, evaluation and sweeps share.

A vocabulary labels a tensor's rows when the tensor is 2-D with one row per word. The word
vectors are ``word_vectors`` if the vocabulary labels it, else the first tensor it labels, for
an archive and a posterior file alike. An embedding needs no labels: without labelled rows it
is ``word_vectors`` if that is 2-D, else the first 2-D tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: The name bnncompress's own skip-gram gives its word vectors, preferred wherever it fits.
WORD_VECTORS = "word_vectors"


def labelled_tensors(shapes: Mapping[str, Sequence[int]], vocab_size: int | None) -> list[str]:
    """Names of the 2-D tensors with one row per vocabulary word, in order (none without a vocabulary).

    Example:
        >>> labelled_tensors({"bias": (3,), "emb": (40, 6)}, 40)
        ['emb']
    """
    if vocab_size is None:
        return []
    return [name for name, shape in shapes.items() if len(shape) == 2 and shape[0] == vocab_size]


def word_vector_tensor(shapes: Mapping[str, Sequence[int]], vocab_size: int | None) -> str | None:
    """The word vectors among tensors of these ``shapes`` (name -> shape, in order) for a
    vocabulary of ``vocab_size`` words: ``word_vectors`` if the vocabulary labels it, else the
    first tensor it labels; None if it labels none (or ``vocab_size`` is None).

    Example:
        >>> word_vector_tensor({"bias": (3,), "emb": (40, 6), "out": (40, 6)}, 40)
        'emb'
    """
    return _preferred(labelled_tensors(shapes, vocab_size))


def embedding_tensor(shapes: Mapping[str, Sequence[int]], vocab_size: int | None) -> str | None:
    """The tensor to read as an embedding: the word vectors (:func:`word_vector_tensor`), else,
    as rows need no labels, ``word_vectors`` if it is 2-D, else the first 2-D tensor; None without one.

    Example:
        >>> embedding_tensor({"bias": (3,), "w": (5, 6)}, None)
        'w'
    """
    return word_vector_tensor(shapes, vocab_size) or _preferred([n for n, s in shapes.items() if len(s) == 2])


def _preferred(candidates: list[str]) -> str | None:
    if not candidates:
        return None
    return WORD_VECTORS if WORD_VECTORS in candidates else candidates[0]
