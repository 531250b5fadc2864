"""``python -m densitylab`` runs the command line."""

from densitylab.cli import main

main()
