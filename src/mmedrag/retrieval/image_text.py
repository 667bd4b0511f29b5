"""Image→report retrieval with a trained tower: an image query searches the index's text store.

Example:
    >>> tower = TrainedTowerEncoder("models/tower")                    # doctest: +SKIP
    >>> ImageToTextRetriever(index, tower).retrieve(Query(image="scan.png"), k=5)  # doctest: +SKIP
"""

from __future__ import annotations

from mmedrag.encoders.tower import TrainedTowerEncoder
from mmedrag.errors import IndexMismatchError
from mmedrag.records import Hit, Query
from mmedrag.retrieval.dense import query_filters
from mmedrag.retrieval.protocol import SearchableIndex


class ImageToTextRetriever:
    """Image query → report texts of the index's text store, via a trained tower.

    Args:
        index: the index whose text store is searched (its text encoder must be the one the
            tower was aligned to).
        encoder: the trained tower.

    Example:
        >>> tower = TrainedTowerEncoder("models/ct")                     # doctest: +SKIP
        >>> ImageToTextRetriever(index, tower).retrieve(Query(image="x.png"), k=5)  # doctest: +SKIP
    """

    name = "image-text"

    def __init__(self, index: SearchableIndex, encoder: TrainedTowerEncoder) -> None:
        text_encoder = index.text_encoder
        text_name = getattr(text_encoder, "name", "")
        other_text = bool(encoder.text_name) and text_name != encoder.text_name
        if other_text or text_encoder.dim != encoder.dim:
            raise IndexMismatchError(
                f"tower {encoder.path} was aligned to text encoder {encoder.text_name!r} "
                f"({encoder.dim}-d) but index {index.dir} uses {text_name!r} "
                f"({text_encoder.dim}-d)")
        self.index = index
        self.encoder = encoder

    def retrieve(self, query: Query, k: int) -> list[Hit]:
        if query.image is None:
            return []
        vector = self.encoder.encode_images([query.image])
        hits = self.index.search_vectors(vector, k, space="text", filters=query_filters(query))[0]
        for hit in hits:
            hit.retriever = self.name
        return hits
