from promotion.cli import cli

cli()
