"""The HTTP front end: the prediction API, CDS Hooks and the probes, over the application."""
