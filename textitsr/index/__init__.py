"""Archive index: on-disk store (`store`), FAISS search with filters (`search`), embedding builds (`build`)."""
