from local_stack.cli import cli

cli()
