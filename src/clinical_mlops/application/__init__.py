"""The use cases: one function each, called by every front end.

The command line, the HTTP API, CDS Hooks and the review console parse their input,
call one function of this package and format its result. A rule (a reason is required,
one decision per case, consent is recorded in the ledger) lives here or below, never in a
front end.
"""
