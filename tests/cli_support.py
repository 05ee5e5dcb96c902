"""Running the command line in-process for tests: exit status and captured output."""
from bertqa.cli import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """`bertqa ARGS` in this process -> (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
