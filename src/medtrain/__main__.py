"""``python -m medtrain`` runs the CLI."""

from medtrain.cli import main

if __name__ == "__main__":
    main()
