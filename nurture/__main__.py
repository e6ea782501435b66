"""``python -m nurture`` runs the command line."""

from nurture.cli import main

# Guarded: the daemon's pass process imports this module again (as ``__mp_main__``).
if __name__ == "__main__":
    main()
