"""``python -m clinical_mlops`` runs the command line."""

from clinical_mlops.cli import main

main()
