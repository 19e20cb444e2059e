"""FAISS indexes over article vectors: build, search, filtered search."""
