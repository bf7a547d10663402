"""`zerosearch version`."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from zerosearch import __version__

    print(f"zerosearch {__version__}")
    return 0
