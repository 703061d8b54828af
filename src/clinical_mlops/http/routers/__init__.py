"""One router per resource: predictions, oversight (overrides, outcomes), models, CDS Hooks."""
