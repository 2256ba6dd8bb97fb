"""``python -m specgan`` is the ``specgan`` command; :func:`run` is also the console script's entry point."""

import signal


def run() -> None:
    """Run the ``specgan`` command with Ctrl-C and SIGTERM held back from its first line until the command (or
    torch's import) takes them over (see ``specgan.cli._signals_deferred``): typer's and rich's imports take about
    a fifth of a second, in which a Ctrl-C had ended in a traceback. One that comes meanwhile acts then."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    from specgan import cli

    cli.mask_at_start = before
    cli.main()


if __name__ == "__main__":
    run()
