"""Tests of the built-in plugins, one module each."""
