"""Built-in plugins: each module is registered under its own name, which ``-p no:NAME`` blocks."""
