"""Retrieval-augmented entity recognition (AutoVER's recipe): query and entity embeddings from the
model's own encoder (``embedding``), the catalogue index searched for each query's candidates
(``index``), and decoding constrained to each sample's candidates (``candidates``)."""
