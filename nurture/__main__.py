"""``python -m nurture`` runs the command line."""

from nurture.cli import main

main()
