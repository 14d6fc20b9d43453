"""``python -m promptcal``: the ``promptcal`` command line."""

from promptcal.commands.cli import console

if __name__ == "__main__":  # importing the module (e.g. pkgutil.walk_packages) runs nothing
    console()
