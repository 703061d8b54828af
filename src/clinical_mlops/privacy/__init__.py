"""Privacy-preserving storage (R-P2, R-P4, R-A4): keys, encryption, pseudonyms, consent, erasure.

- :mod:`~clinical_mlops.privacy.keys`: key providers (local keyring, Vault) with rotation;
- :mod:`~clinical_mlops.privacy.crypto`: AES-256-GCM payload sealing under data keys;
- :mod:`~clinical_mlops.privacy.identity`: the identity vault (pseudonyms, wrapped
  per-subject data keys), kept in its own database so it can be erased;
- :mod:`~clinical_mlops.privacy.consent`: consent scope (purposes) and validity;
- erasure (crypto-shredding) is :meth:`IdentityVault.erase
  <clinical_mlops.privacy.identity.IdentityVault.erase>`; the audited use cases (consent
  granted or withdrawn, a subject erased, each a ledger entry) are in
  :mod:`clinical_mlops.application.privacy`. This package never imports the ledger.
"""
