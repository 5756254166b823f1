"""The command line: one module per verb, the option parsing and ``[tool.pipekit]`` defaults."""
