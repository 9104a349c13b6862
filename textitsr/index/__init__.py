"""Archive index: on-disk store (`store`), FAISS search + filters (`search`), embedding builds (`build`)."""
