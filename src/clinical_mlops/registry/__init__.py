"""Registry and lineage: what a model is made of, and where it stands."""
