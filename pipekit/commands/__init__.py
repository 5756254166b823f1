"""Commands that operate on a batch's saved state: status, reset, skip, export,
report, and the scaffolding command ``new``. Each is one module with a
``command(args, plugins) -> ExitCode`` function registered in ``pipekit.cli``.
"""
