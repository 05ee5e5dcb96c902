"""The subcommand registry: each CLI module registers its subcommands with @subcommand."""

SUBCOMMANDS: dict = {}     # name -> (help, add_arguments, run)


def subcommand(name: str, help: str, add_arguments):
    def register(fn):
        SUBCOMMANDS[name] = (help, add_arguments, fn)
        return fn
    return register
