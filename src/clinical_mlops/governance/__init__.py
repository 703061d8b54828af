"""Governance: gates as policy-as-code, approvals by named roles, rollout modes, periodic
reviews, incidents and operations metrics — every act recorded in the audit ledger."""
