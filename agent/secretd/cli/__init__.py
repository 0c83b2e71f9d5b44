"""The command line: argparse, exit codes, and the only place that prints."""
